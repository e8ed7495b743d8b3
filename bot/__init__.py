"""The core every other package uses: the diff model, the prompt contract, the model backends,
the review pipeline, the GitHub layer, the dataset store and the output formats."""
