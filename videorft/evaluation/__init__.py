"""Evaluation: score a model's predictions with the same rules it was trained on.

Kept free of imports so that importing one module of the package (say ``scoring``, which needs
no torch) never pulls in the heavier ones.
"""
