"""spinet: the Siamese hit classifier (triplet-loss embedding, few-shot classification by distance).

Modules: ``config``, ``data``, ``preprocess``, ``augment``, ``models``, ``losses``, ``train``, ``fewshot``,
``inference``, ``checkpoint``, ``export``, ``speed``, ``synthetic`` (see ``docs/spinet.md``).
"""
