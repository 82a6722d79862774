"""Policy sessions (Part 1, 19.7; Part 3, clause 23): the assertions a policy session
accumulates and the checks made when it authorizes a command."""
