"""Item-embedding tokens for LLaRA's hybrid prompt: a compact SASRec item encoder and the projector.

``train_sasrec(dataset)`` trains SASRec on the training interactions and returns an
:class:`ItemEncoder` (item ids + embedding table, saved as safetensors + JSON);
:class:`ItemProjector` maps those embeddings into the LLM's embedding space and is trained
(and edited by the influence engine) with the LoRA adapter.
"""

from rec_eraser.encoders.evaluation import hit_at_k, popularity_hit_at_k
from rec_eraser.encoders.projector import ItemProjector
from rec_eraser.encoders.sasrec import ItemEncoder, SASRec, UnknownItemError
from rec_eraser.encoders.sasrec_train import train_sasrec, training_sequences, training_windows

__all__ = [
    "ItemEncoder",
    "ItemProjector",
    "SASRec",
    "UnknownItemError",
    "hit_at_k",
    "popularity_hit_at_k",
    "train_sasrec",
    "training_sequences",
    "training_windows",
]
