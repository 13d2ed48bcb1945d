"""lengthgen: length generalization in recurrent models (Buitrago Ruiz & Gu, ICML 2025), replicated.

Layers (each depends only on the ones above it):
ops -> models -> interventions -> data -> train -> evaluate/tasks -> results -> cli/stages.
"""

__version__ = "0.1.0"
