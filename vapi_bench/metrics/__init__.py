"""Image-generation metrics in numpy/torch, matching the ADM evaluator's definitions.

numpy float64 in, Python floats out. Feature extraction lives in `inception.py`; everything else is
pure maths on features so it can be unit-tested against reference formulas.
"""
from .fid import frechet_distance, gaussian_stats
from .inception import InceptionExtractor, InceptionFeatures, inception_requirement, load_inception
from .inception_score import inception_score
from .kid import kernel_inception_distance
from .precision_recall import precision_recall

__all__ = [
    "InceptionExtractor",
    "InceptionFeatures",
    "frechet_distance",
    "gaussian_stats",
    "inception_score",
    "inception_requirement",
    "kernel_inception_distance",
    "load_inception",
    "precision_recall",
]
