"""Training of the default detector's token head on cached, frozen backbone features.

Steps (run them all with `python -m eventful_perception.training all`):
`labels` (HOG people detector + background subtraction + temporal consistency, see `labels`),
`features` (frozen DINOv2 tokens of every labelled frame), `train` (the token head, held-out
mAP50) and `eventful` (mAP50 of eventful outputs against dense outputs of the same model).
"""
