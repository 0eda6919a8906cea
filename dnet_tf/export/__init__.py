"""SavedModel export: versioned, atomic, with warm-up requests (``saved_model``), and its CLI."""
