"""``smtpapi-milter demo``: the whole path, for real, on this machine, in about a minute.

A private Postfix (``sandbox.postfix``) with our milter in ``smtpd_milters`` relays to a
capture server; ``smtpapi-milter run`` serves the milter and the tracker; a sample newsletter
goes in over SMTP with an X-MSYS-API header; the demo shows what changed in the delivered
copy, opens and clicks it over HTTP like a mail client would, and prints the events. Every
process and file it made is gone afterwards (``--keep`` leaves it running until Enter).
"""
