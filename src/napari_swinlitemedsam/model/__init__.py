"""Model core (layer 1): the networks, the model registry and checkpoint loading.

Imports torch only.
"""
