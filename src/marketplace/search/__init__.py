"""Similar products at serve time: the catalogue's live changes on top of the built index."""
