"""Fast neural style transfer (Johnson et al.): the photo, restyled."""
