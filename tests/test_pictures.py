"""The pictures of `convloc segment` and `convloc detect`: classes in their colours, the image
still visible under the segments (enlarged, with a legend), boxes with their class and score."""

import numpy as np

from convloc.data.pictures import class_colour, detection_picture, segmentation_picture


def test_segmentation_picture_outlines_tints_and_keeps_the_background():
    image = np.full((16, 16, 3), 100, np.uint8)
    labels = np.zeros((16, 16), np.uint8)
    labels[4:12, 4:12] = 2
    labels[0, :] = 255  # unlabelled pixels are left as they are
    out = segmentation_picture(image, labels, ["background", "disk", "square"])
    k = 384 // 16
    assert out.shape[1] == 16 * k and out.shape[0] > 16 * k  # the legend below
    colour = np.array(class_colour(2))
    np.testing.assert_array_equal(out[4 * k, 8 * k], colour)  # the segment's edge
    np.testing.assert_array_equal(
        out[8 * k, 8 * k], (0.7 * 100 + 0.3 * colour).astype(np.uint8)
    )  # light tint
    np.testing.assert_array_equal(out[2 * k, 2 * k], [100, 100, 100])  # background untouched
    np.testing.assert_array_equal(out[0, 8 * k], [100, 100, 100])
    legend = out[16 * k :]
    assert (np.abs(legend.astype(int) - colour).sum(-1) == 0).any()  # the swatch of "square"
    assert not (np.abs(legend.astype(int) - class_colour(1)).sum(-1) == 0).any()  # no disk


def test_detection_picture_draws_boxes_above_the_threshold_in_their_colours():
    image = np.full((100, 120, 3), 60, np.uint8)
    det = {
        "boxes": np.array([[10, 10, 50, 60], [70, 20, 110, 90]], np.float32),
        "scores": np.array([0.9, 0.3], np.float32),
        "labels": np.array([1, 0]),
    }
    out = detection_picture(image, det, ["circle", "square"], threshold=0.5)
    assert out.shape == image.shape
    np.testing.assert_array_equal(out[35, 10], class_colour(2))  # left edge of the square
    np.testing.assert_array_equal(out[50, 70], [60, 60, 60])  # the 0.3 circle is not drawn
