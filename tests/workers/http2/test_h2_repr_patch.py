"""The cheaper frame repr reads exactly as hyperframe's own, for every payload."""

from __future__ import annotations

from hyperframe.frame import DataFrame
from hypothesis import given
from hypothesis import strategies as st

from workers.http import h2_repr_patch


@given(st.binary(max_size=200) | st.none())
def test_same_text_as_hyperframe(data: bytes | None) -> None:
    assert h2_repr_patch._raw_data_repr(data) == h2_repr_patch.original_raw_data_repr(data)


def test_frames_use_it() -> None:
    import hyperframe.frame

    assert hyperframe.frame._raw_data_repr is h2_repr_patch._raw_data_repr
    assert "<hex:00000000000000000000...>" in repr(DataFrame(1, data=b"\x00" * 16384))
