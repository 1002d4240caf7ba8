"""Data: sources (``NAME=SPEC``), the in-memory :class:`Samples`, controlled corruptions and splits."""

from core.data.corruptions import (
    pair_label_noise,
    parse_pairs,
    parse_undersample,
    symmetric_label_noise,
    undersample,
)
from core.data.dataset import Samples
from core.data.sources import KINDS, SourceSpec, load_sources, parse_spec, sort_class_names
from core.data.splits import stratified_split

__all__ = [
    "KINDS",
    "Samples",
    "SourceSpec",
    "load_sources",
    "pair_label_noise",
    "parse_pairs",
    "parse_spec",
    "parse_undersample",
    "sort_class_names",
    "stratified_split",
    "symmetric_label_noise",
    "undersample",
]
