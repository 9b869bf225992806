#!/usr/bin/env bash
# Makes the pictures of docs/gallery.md with convloc's own commands, the same commands the page
# shows, trained briefly (about ten minutes on 2 CPU cores). Needs convloc and torch installed.
#
#   bash docs/make_gallery.sh [WORKDIR]    (WORKDIR keeps the data sets and checkpoints;
#                                           default: a temporary folder, removed at the end)
set -euo pipefail
gallery=$(cd "$(dirname "$0")" && pwd)/gallery
work=${1:-$(mktemp -d)}
if [ -z "${1:-}" ]; then trap 'rm -rf "$work"' EXIT; fi
mkdir -p "$work" "$gallery"
cd "$work"

# Dense CRF on the shipped photo: image | noisy unary argmax | CRF labels.
convloc demo -o crf_demo.png

# Fast R-CNN on the synthetic shapes; boxes on the first three test images.
convloc data make-shapes shapes
convloc train fast-rcnn --data shapes --out frcnn.pt --threads 1
for id in 000300 000301 000302; do
  convloc detect frcnn.pt "shapes/JPEGImages/$id.jpg" -o "detect_$id.png"
done

# FCN-8s on the synthetic segmentation set (default options); the first three validation images.
convloc data make-segmentation seg
convloc train fcn --data seg --variant 8s -o fcn8s.pt --threads 1
for id in 00300 00301 00302; do
  convloc segment fcn8s.pt "seg/JPEGImages/synth_$id.jpg" -o "segment_$id.png"
done

cp crf_demo.png detect_*.png segment_*.png "$gallery/"
ls -l "$gallery"
