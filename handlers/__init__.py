"""The serving tree every archive carries: the core (life cycle, inputs, options, images, answers, metrics), shared
vision helpers, and one folder per model family (its steps, its handler). See docs/architecture.md."""
