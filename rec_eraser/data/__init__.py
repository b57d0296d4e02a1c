"""Datasets: RecBole atomic files, per-dataset field mappings and the chronological split."""

from rec_eraser.data.atomic import AtomicTable, DatasetError, Field, read_atomic
from rec_eraser.data.dataset import Dataset, Interaction, load_dataset, recbole_dataset_dir
from rec_eraser.data.mapping import MAPPINGS_DIR, Mapping, known_datasets, load_mapping, mapping_for
from rec_eraser.data.split import SPLITS, Step, chronological, leave_last_out, steps

__all__ = [
    "MAPPINGS_DIR",
    "SPLITS",
    "AtomicTable",
    "Dataset",
    "DatasetError",
    "Field",
    "Interaction",
    "Mapping",
    "Step",
    "chronological",
    "known_datasets",
    "leave_last_out",
    "load_dataset",
    "load_mapping",
    "mapping_for",
    "read_atomic",
    "recbole_dataset_dir",
    "steps",
]
