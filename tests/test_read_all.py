"""convloc.data.files.read_all: a set read by threads is the set read in order, errors included."""

import pytest

from convloc.data.files import read_all


@pytest.mark.parametrize("workers", [0, 1, 4])
@pytest.mark.parametrize("n", [0, 1, 7])
def test_read_all_keeps_the_order(workers, n):
    assert read_all(lambda i: i * i, range(n), workers) == [i * i for i in range(n)]


def test_read_all_passes_the_readers_error_and_refuses_negative_workers():
    def read(i):
        if i == 3:
            raise OSError(f"image {i}: truncated")
        return i

    with pytest.raises(OSError, match="image 3: truncated"):
        read_all(read, range(6), 2)
    with pytest.raises(ValueError, match="workers: expected >= 0, got -1"):
        read_all(read, range(6), -1)
