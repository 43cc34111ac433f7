"""``python -m anfcodec.training``: the same as ``anfcodec train``."""
from ..cli import main

main(["train", *__import__("sys").argv[1:]])
