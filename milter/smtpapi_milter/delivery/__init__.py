"""What happened to each message after the milter: the MTA's delivery outcomes and their
SparkPost bounce classes (SPEC 13). `bounce_class` decides the class of a failed delivery."""
