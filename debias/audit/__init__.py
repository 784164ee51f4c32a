"""Audit encoders you did not train: does the representation carry the bias attribute, and does
it treat groups differently? :func:`embed` -> :class:`Embeddings` -> :func:`audit_embeddings`
-> :class:`AuditReport` (``.summary()``, ``.table()``, ``.save(dir)``). :func:`fit_dfr` fits the
official DFR head (last layer retrained on group-balanced validation features)."""

from debias.audit.audit import AuditReport, audit_embeddings, linear_probe_predict
from debias.audit.dfr import DFRHead, fit_dfr
from debias.audit.embed import Embeddings, embed
from debias.audit.geometry import alignment, cross_group_cosine, knn_purity, uniformity

__all__ = [
    "AuditReport",
    "DFRHead",
    "Embeddings",
    "alignment",
    "audit_embeddings",
    "cross_group_cosine",
    "embed",
    "fit_dfr",
    "knn_purity",
    "linear_probe_predict",
    "uniformity",
]
