"""Model compression: pruning, weight sharing, quantization and their storage accounting."""
