"""Looking inside networks: per-layer summaries, receptive fields, MACs and pictures."""
