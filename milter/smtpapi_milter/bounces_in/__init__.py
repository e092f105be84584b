"""Out-of-band bounces and spam complaints (SPEC 13): the return path the milter sets
(``bounce_domain``, return_path.py), what a report that comes back to it says (classify.py),
and ``smtpapi-milter bounce-in``, which the MTA pipes those reports to (command.py)."""
