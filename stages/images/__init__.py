"""Images in: where they come from, how they are decoded, the views (crops) the model sees, class names."""
