//! The generation loop: models loaded once; a batch of cells -> latents -> images.
