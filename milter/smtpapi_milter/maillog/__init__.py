"""The MTA log follower (SPEC 13): per-recipient delivery outcomes from Postfix's or
Sendmail's log, joined to the milter's injections and stored as SparkPost message events.

One module per step of the path a line takes: a source (``file_source``: a log file followed
across rotation; ``journal_source``: journald by cursor) gives ``lines.LogLine``\\s; a parser
(``postfix``, ``sendmail``) turns them into ``outcome.Outcome``\\s; ``join`` finds the
injection each one is about; ``outcome_events`` builds the events; ``follower`` runs the loop
and commits each batch of events together with the source's position (``position``).
"""
