"""The smart filter: the person kept, the background chosen from the largest face's expression."""
