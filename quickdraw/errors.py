"""The one exception type for mistakes a user can make and fix."""


class QuickDrawError(Exception):
  """An error caused by input the user controls (a flag, a file, a path).

  Its message is a single line that names the offending thing and says what to
  do about it. Entry points print it on stderr and exit non-zero, without a
  traceback; anything else that escapes is a bug and keeps its traceback.
  """
