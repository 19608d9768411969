"""compkit: folds, training, ensembling and submissions for image-classification competitions."""
