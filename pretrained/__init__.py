"""Published ImageNet weights (torchvision, timm, Keras) converted into the zoo, proven equal to
their sources: weight files read (weight_files), names and layouts mapped (sources, convert), a
converted model written as a workdir every mode accepts (workdir), and top-5 predictions
(predict)."""
