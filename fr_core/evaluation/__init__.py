"""Quality measured on real data: open-set identification (``identification``, behind
``fr-edge evaluate``) and presentation-attack detection (``liveness``, behind
``fr-edge evaluate-liveness``).
"""
