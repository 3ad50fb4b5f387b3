"""Training and evaluation of the default detector's token head on frozen backbone features.

Steps (`python -m eventful_perception.training [labels|features|train|evaluate|all]`): `labels`
(hand labels of the stills; YOLOv8s teacher labels of the videos, cleaned up), `features` (frozen
DINOv2 tokens of every sample at short sides 224-518), `train` (the token head) and `evaluate`
(held-out metrics per input scale and eventful vs dense, written to `metrics.json`).
"""
