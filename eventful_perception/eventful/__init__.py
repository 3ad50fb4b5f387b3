"""Eventful Transformer core (Dutson, Li, Gupta, ICCV 2023): plain PyTorch, no ROS import.

Token gates pick the tokens whose input changed most since they were last computed, token-wise
operations run on those only, buffers keep every other row from earlier frames, and a sparse
attention update recomputes only the affected rows and columns. All per-camera state lives in a
`Stream`; modules and policies hold none.
"""
