"""nbgrader configuration for the course (run nbgrader from the repository root).

Source notebooks (with solutions and hidden tests) live in solutions/<assignment>/, and
`nbgrader generate_assignment assignment1` writes the student version to notebooks/assignment1/.
The gradebook (gradebook.db) and the submitted/, autograded/ and feedback/ folders are created next to
this file when grading; autograde_tests/ runs the whole pipeline in a temporary copy instead.
"""
c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)

c.CourseDirectory.course_id = "diffusion-course"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"

# Kernel and time limits for executing notebooks (validate, autograde).
c.Execute.kernel_name = "python3"
c.Execute.timeout = 60  # seconds per cell; an endless loop fails its cell instead of hanging grading
c.ExecutePreprocessor.timeout = 60

# What a solution region becomes in the student's notebook.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
