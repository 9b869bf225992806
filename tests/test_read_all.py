"""convloc.data.files.read_ahead / read_all: a set read by threads is the set read in order, errors
included, with at most ``workers`` items read ahead."""

import threading

import pytest

from convloc.data.files import read_ahead, read_all


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


@pytest.mark.parametrize("workers", [1, 3])
def test_read_ahead_reads_at_most_workers_items_ahead(workers):
    read, lock = [], threading.Lock()

    def note(i):
        with lock:
            read.append(i)
        return i

    taken = []
    for i in read_ahead(note, range(20), workers):
        with lock:  # every read started before item i was taken is at most `workers` past it
            assert max(read) <= i + workers
        taken.append(i)
    assert taken == list(range(20)) and sorted(read) == list(range(20))
