import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convloc import ops
from reference import deconv as ref

from .arrays import check_call, hostile_arrays, shapes

DECONV_ARGS = ["input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation"]

small_pairs = st.integers(-1, 3) | st.tuples(st.integers(-1, 3), st.integers(-1, 3))
geometry = st.fixed_dictionaries(
    {
        "stride": small_pairs,
        "padding": small_pairs,
        "output_padding": small_pairs,
        "groups": st.integers(-1, 3),
        "dilation": small_pairs,
    }
)


@settings(max_examples=min(settings().max_examples, 300))
@given(
    hostile_arrays(shape=shapes(None, None, None, None), finite_only=True),
    hostile_arrays(shape=shapes(None, None, None, None), finite_only=True),
    st.none() | hostile_arrays(shape=shapes(None), finite_only=True),
    geometry,
)
def test_conv_transpose2d_never_crashes_and_is_right_when_it_returns(x, w, bias, geo):
    out = check_call(ops.conv_transpose2d, DECONV_ARGS, x, w, bias, **geo)
    if out is not None:
        assert out.dtype == x.dtype and x.dtype in (np.float32, np.float64)
        want = ref.conv_transpose2d(x if x.ndim == 4 else x[None], w, bias, **geo)
        want = want if x.ndim == 4 else want[0]
        assert out.shape == want.shape
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-3)


@given(hostile_arrays(shape=shapes(None, None, None)), hostile_arrays(shape=shapes(None, None, None, None)))
def test_unbatched_and_nonfinite_inputs_never_crash(x, w):
    out = check_call(ops.conv_transpose2d, DECONV_ARGS, x, w)
    if out is not None:
        assert out.ndim == x.ndim and out.dtype == x.dtype  # hostile shapes may add a batch axis


def test_kernel_sizes_beyond_memory_are_refused_before_allocation():
    with pytest.raises(ValueError, match="^channels, factor: a"):
        ops.bilinear_kernel(3, 10**9)
