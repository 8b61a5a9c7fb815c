"""norm-robustness: exact norms of CNN layers, norm regularizers and the experiments of
Liang & Huang, "Large Norms of CNN Layers Do Not Hurt Adversarial Robustness" (AAAI 2021)."""

__version__ = "0.1.0"
