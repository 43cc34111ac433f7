"""The decoder without a deep-learning framework: numpy (and constriction) only.

Importing this package, or any module in it, never imports torch. ``program`` reads a model's
decoder program (which networks, which operations on which weights, and the weights' integer
forms; exported beside the shipped weights by ``anfcodec.training.export``) and lowers the networks
into operations; ``nets`` runs them in the format's exact arithmetics, the fixed point of
``anfcodec.exact`` and the 8-bit synthesis of ``anfcodec.int8net``, with the same integers and the
same correctly rounded steps, so that it decodes the torch decoder's pixels.
"""
