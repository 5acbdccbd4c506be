"""course_lib: the reference library of the diffusion course."""
