"""Models that learn from the store: the 1-D CNN on event windows (:mod:`.cnn`, streaming
in :mod:`.windows`) and the scikit-learn models on features."""
