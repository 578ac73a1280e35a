"""Training: pure steps and the loop around them. Imports no TensorFlow."""
