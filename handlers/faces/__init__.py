"""Faces (MTCNN cascade, expression classifier): boxes, five landmarks, an expression and a smile per face."""
