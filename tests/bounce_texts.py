"""Real bounce texts from public sources, each with the SparkPost bounce class it must get
(classes: https://support.sparkpost.com/docs/deliverability/bounce-classification-codes).

A row is (dsn, reason, class, source). ``reason`` is what Postfix logs in parentheses after
``status=``: a remote server's reply as ``host X said: <reply> (in reply to ...)`` or a
reason of the MTA's own. Rows whose reason starts with a reply code are a remote reply; the
test wraps them the way Postfix logs them. ``dsn`` is Postfix's ``dsn=`` when it is not the
reply's own enhanced code (Postfix's own reasons, replies without an enhanced code). Addresses
and IP addresses are replaced by documentation ones; the texts are otherwise as published."""

from __future__ import annotations

# Sources. Each provider's own page where there is one, else a public page or repository
# that quotes the provider's reply verbatim.
GMAIL = "https://support.google.com/a/answer/3726730 (Gmail SMTP errors and codes)"
GMAIL_FIELD = "https://smtpfieldmanual.com/provider/google"
GMAIL_SISIMAI = (
    "sisimai/p5-sisimai lib/Sisimai/Rhost/Google.pm (quotes https://support.google.com/a/answer/"
    "3726730)"
)
GMAIL_UNAUTH = "https://powerdmarc.com/ja/fix-this-mail-is-unauthenticated-gmail-error"
MS_NDR = (
    "https://learn.microsoft.com/en-us/troubleshoot/exchange/email-delivery/ndr/"
    "non-delivery-reports-in-exchange-online"
)
MS_5_7_7XX = (
    "https://learn.microsoft.com/en-us/Exchange/mail-flow-best-practices/"
    "non-delivery-reports-in-exchange-online/fix-error-code-5-7-700-through-5-7-750"
)
MS_INVALID = "https://www.spamresource.com/2023/09/microsoft-multiple-types-of-invalid.html"
MS_5_7_57 = "https://www.easy365manager.com/office-365-ndr-error-codes/"
MS_SC001 = (
    "https://support.binarylane.com.au/support/solutions/articles/"
    "11000047583-emails-to-hotmail-and-outlook-are-blocked"
)
PASTEBIN_606 = "https://pastebin.com/EH1TUb0X (Postfix bounce, Exchange Online 5.7.606)"
PASTEBIN_S3150 = "https://pastebin.com/rwzHX08U (Postfix bounce, outlook.com S3150)"
PASTEBIN_511 = "https://pastebin.com/JEGXAxrE (Exchange Online 5.7.511)"
PASTEBIN_DNSBL = "https://pastebin.com/MFXQe2wV (Exchange NDR quoting a DNSBL reject)"
PASTEBIN_SENDER = "https://pastebin.com/gf1TwE62 (Postfix maillog, status=bounced)"
PASTEBIN_CLIENT = "https://pastebin.com/UyYmyNYV (Postfix bounce from frontbridge.com)"
YAHOO = "https://smtp.codes/yahoo"
YAHOO_SISIMAI = (
    "sisimai/p5-sisimai lib/Sisimai/Rhost/YahooInc.pm (quotes https://senders.yahooinc.com/"
    "smtp-error-codes)"
)
YAHOO_HELP = "https://help.yahoo.com/kb/mail-for-desktop/SLN3444.html"
YAHOO_HELP_OLD = "http://help.yahoo.com/l/in/yahoo/mail/original/abuse/abuse-57.html"
ICLOUD = "https://smtp.codes/icloud"
COMCAST = "http://security.comcast.net/get-help/Mail-Delivery-Error-Messages.aspx"
GMX = "https://smtp.codes/unitedinternet/ (GMX, web.de, mail.com)"
GMX_OWN = "https://postmaster.gmx.com/en/error-messages"
GERMAN_ISPS = (
    "http://www.sitepackage.de/service/dokumentation/auswertung/"
    "typische-fehlermeldungen-bei-unzustellbarkeit.html (T-Online, GMX, web.de, AOL, Freenet)"
)
ORANGE = "sisimai/p5-sisimai lib/Sisimai/Rhost/FrancePTT.pm (Orange, La Poste replies)"
FRENCH_ISPS = (
    "https://doc.gadz.org/pages/diffpages.action?originalId=21791317&pageId=21792015 "
    "(Orange, Free, La Poste, SFR bounces)"
)
MAILRU_DMARC = "https://viws.ru/en/poterya-pochtovyh-soobshchenii-oshibki-pochtovoi-sistemy.html"
MAILRU_SPAM = "https://errorsmaster.ru/oshibka-550-spam-message-rejected (Mail.ru)"
NICRU = "https://nic.ru/help/mail-diagnostics-and-troubleshooting_14426.html"
SWISS_ISP = "https://support.onesystems.ch/722126 (Postfix rejects quoted by a Swiss ISP)"
SPARKPOST_DELAYS = "https://support.sparkpost.com/docs/faq/understanding-delays-bounces"
RFC5321 = "RFC 5321 section 4.2.2 (reply codes and their standard texts)"
POSTFIX_ADDR = "Postfix source src/smtp/smtp_addr.c (Name service error)"
POSTFIX_CONNECT = "Postfix source src/smtp/smtp_connect.c (connect to ...)"
POSTFIX_PROTO = "Postfix source src/smtp/smtp_proto.c (lost connection / timed out / size)"
POSTFIX_LOCAL = "Postfix source src/local/local.c and unknown.c (unknown user)"
POSTFIX_SMTPD = "Postfix source src/smtpd/smtpd_check.c (Relay access denied, User unknown)"
POSTFIX_LOOP = "Postfix source src/smtp/smtp_connect.c (mail for ... loops back to myself)"
EXIM = "Exim source src/routers/dnslookup.c, src/route.c, src/retry.c"
QMAIL = "qmail 1.03 qmail-remote.c and qmail-local.c"
SENDMAIL = (
    "Sendmail 8 sendmail/err.c (Name server: host not found / host name lookup failure) and "
    "public sendmail maillog lines (stat=Deferred: Connection refused by ..., stat=Host unknown)"
)

ROWS: list[tuple[str | None, str, int, str]] = [
    # --- Gmail / Google Workspace -------------------------------------------------------------
    (
        None,
        "550 5.1.1 The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address for typos or unnecessary spaces. - gsmtp",
        10,
        GMAIL_FIELD,
    ),
    (
        None,
        "550 5.2.1 The email account that you tried to reach is disabled. - gsmtp",
        10,
        GMAIL_SISIMAI,
    ),
    (None, "452 4.2.2 The email account that you tried to reach is over quota. - gsmtp", 22, GMAIL),
    (
        None,
        "452 4.2.2 The recipient's inbox is out of storage space. Please direct the recipient "
        "to https://support.google.com/mail/?p=OverQuotaTemp - gsmtp",
        22,
        GMAIL_SISIMAI,
    ),
    (
        None,
        "552 5.3.4 Your message exceeded Google's message size limits. To view our message "
        "size guidelines, go to Send attachments with your Gmail message. - gsmtp",
        23,
        GMAIL_SISIMAI,
    ),
    (
        None,
        "550-5.7.1 Our system has detected that this message is 550-5.7.1 likely unsolicited "
        "mail. To reduce the amount of spam sent to Gmail, 550-5.7.1 this message has been "
        "blocked. 550 5.7.1 https://support.google.com/mail/?p=UnsolicitedMessageError - gsmtp",
        51,
        GMAIL_SISIMAI,
    ),
    (
        None,
        "421-4.7.0 Our system has detected an unusual rate of unsolicited mail originating "
        "from your IP address. To protect our users from spam, mail sent from your IP address "
        "has been temporarily blocked. - gsmtp",
        51,
        GMAIL,
    ),
    (
        None,
        "421 4.7.28 [192.0.2.25] Our system has detected an unusual rate of unsolicited mail "
        "originating from your IP address. To protect our users from spam, mail sent from your "
        "IP address has been temporarily rate limited. - gsmtp",
        51,
        GMAIL_FIELD,
    ),
    (
        None,
        "421 4.7.0 [192.0.2.25] Our system has detected that this message is suspicious due "
        "to the very low reputation of the sending domain. To best protect our users from spam, "
        "the message has been blocked. - gsmtp",
        51,
        GMAIL_FIELD,
    ),
    (
        None,
        "421 4.7.0 [192.0.2.25] Our system has detected that this message is suspicious due "
        "to the nature of the content and/or the links within. To best protect our users from "
        "spam, the message has been blocked. - gsmtp",
        52,
        GMAIL_FIELD,
    ),
    (
        None,
        "550-5.7.26 This mail has been blocked because the sender is unauthenticated. "
        "550-5.7.26 Gmail requires all senders to authenticate with either SPF or DKIM. - gsmtp",
        50,
        GMAIL_UNAUTH,
    ),
    (
        None,
        "552 5.7.0 Our system detected an illegal attachment on your message. Please visit "
        "http://mail.google.com/support/bin/answer.py?answer=6590 to review our attachment "
        "guidelines. - gsmtp",
        53,
        GMAIL_SISIMAI,
    ),
    (
        None,
        "552 5.7.0 This message was blocked because its content presents a potential "
        "security issue. - gsmtp",
        53,
        GMAIL_SISIMAI,
    ),
    (
        None,
        "550 5.7.1 The user or domain that you are sending to (or from) has a policy that "
        "prohibited the mail that you sent. - gsmtp",
        50,
        GMAIL_SISIMAI,
    ),
    (
        None,
        "550 5.7.25 The IP address sending this message does not have a PTR record setup, or "
        "the corresponding forward DNS entry does not point to the sending IP. As a policy, "
        "Gmail does not accept messages from IPs with missing PTR records. - gsmtp",
        50,
        GMAIL_SISIMAI,
    ),
    (
        None,
        "554 5.4.6 Message exceeded 50 hops, this may indicate a mail loop. - gsmtp",
        40,
        GMAIL_SISIMAI,
    ),
    (None, "550 5.4.5 Daily user sending limit exceeded. - gsmtp", 40, GMAIL_SISIMAI),
    (
        None,
        "550 5.7.1 Messages missing a valid address in the From: header, or having no From: "
        "header, are not accepted. - gsmtp",
        50,
        GMAIL_SISIMAI,
    ),
    (None, "421 4.7.0 IP not in whitelist for RCPT domain, closing connection. - gsmtp", 50, GMAIL),
    (None, "421 4.7.0 TLS required for RCPT domain, closing connection. - gsmtp", 50, GMAIL),
    (
        None,
        "450 4.2.1 The user you are trying to contact is receiving mail at a rate that "
        "prevents additional messages from being delivered. Please resend your message at a "
        "later time. - gsmtp",
        70,
        GMAIL_FIELD,
    ),
    (None, "421 4.3.0 Temporary System Problem. Try again later - gsmtp", 70, GMAIL),
    (None, "421 4.4.5 Server busy, try again later. - gsmtp", 70, GMAIL),
    (None, "451 4.4.2 Timeout - closing connection. - gsmtp", 24, GMAIL),
    (None, "452 4.5.3 Your message has too many recipients. - gsmtp", 70, GMAIL),
    (None, "451 4.5.0 SMTP protocol violation, see RFC 2821. - gsmtp", 20, GMAIL),
    # --- Microsoft: Outlook.com, Exchange Online -----------------------------------------------
    (
        None,
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        10,
        MS_INVALID,
    ),
    (
        None,
        "550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302). "
        "[BN8NAM11FT066.eop-nam11.prod.protection.outlook.com]",
        10,
        MS_INVALID,
    ),
    (
        None,
        "550 5.4.1 Recipient address rejected: Access denied. [BN8NAM11FT066.eop-nam11.prod."
        "protection.outlook.com]",
        10,
        MS_INVALID,
    ),
    (
        None,
        "550 5.7.606 Access denied, banned sending IP [192.0.2.25]. To request removal from "
        "this list please visit https://sender.office.com/ and follow the directions. For more "
        "information please go to http://go.microsoft.com/fwlink/?LinkID=526655 AS(1430)",
        51,
        PASTEBIN_606,
    ),
    (
        None,
        "550 5.7.1 Unfortunately, messages from [192.0.2.25] weren't sent. Please contact "
        "your Internet service provider since part of their network is on our block list "
        "(AS3150). You can also refer your provider to http://mail.live.com/mail/troubleshooting."
        "aspx#errors. [BY2NAM01FT030.eop-nam01.prod.protection.outlook.com]",
        51,
        PASTEBIN_S3150,
    ),
    (
        None,
        "550 5.7.511 Access denied, banned sender[192.0.2.25]. To request removal from this "
        "list please forward this message to delist@messaging.microsoft.com. AS(508)",
        51,
        PASTEBIN_511,
    ),
    (
        None,
        "550 SC-001 (BAY004-MC4F49) Unfortunately, messages from 192.0.2.25 weren't sent. "
        "Please contact your Internet service provider since part of their network is on our "
        "block list.",
        51,
        MS_SC001,
    ),
    (None, "550 5.7.708 Access denied, traffic not accepted from this IP.", 50, MS_5_7_7XX),
    (None, "550 5.7.705 Access denied, tenant has exceeded threshold.", 50, MS_5_7_7XX),
    (
        None,
        "530 5.7.57 SMTP; Client was not authenticated to send anonymous mail during MAIL FROM",
        50,
        MS_5_7_57,
    ),
    ("4.4.7", "Message expired", 24, MS_NDR),
    ("4.4.316", "Connection refused [Message=Socket error code 10061]", 24, MS_NDR),
    (None, "432 4.3.2 STOREDRV.Deliver; recipient thread limit exceeded", 70, MS_NDR),
    (
        None,
        "550 5.7.1 Access denied to 192.0.2.25 by dnsbl.spam.fail DNSBL (http://spam.fail/)",
        51,
        PASTEBIN_DNSBL,
    ),
    # --- Yahoo / AOL ---------------------------------------------------------------------------
    (
        None,
        "421 4.7.0 [TSS04] Messages from 192.0.2.25 temporarily deferred due to unexpected "
        "volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
        51,
        YAHOO,
    ),
    (
        None,
        "553 5.7.1 [BL21] Connections will not be accepted from 192.0.2.25, because the ip "
        "is in Spamhaus's list; see http://postmaster.yahoo.com/550-bl23.html",
        51,
        YAHOO_SISIMAI,
    ),
    (
        None,
        "553 5.7.2 [TSS09] All messages from 192.0.2.25 will be permanently deferred; "
        "Retrying will NOT succeed. See https://postmaster.yahooinc.com/error-codes",
        51,
        YAHOO_SISIMAI,
    ),
    (
        None,
        "550 5.7.9 This mail has been blocked because the sender is unauthenticated. Yahoo "
        "requires all senders to authenticate with either SPF or DKIM.",
        50,
        YAHOO_SISIMAI,
    ),
    (
        None,
        "554 5.7.9 Message not accepted for policy reasons. See "
        "https://postmaster.yahooinc.com/error-codes",
        50,
        YAHOO_SISIMAI,
    ),
    (
        None,
        "554 delivery error: dd This user doesn't have a yahoo.com account "
        "(nobody@yahoo.com) [0] - mta1001.mail.gq1.yahoo.com",
        10,
        YAHOO_HELP,
    ),
    (None, "554 delivery error: dd nobody@yahoo.com is no longer valid.", 10, YAHOO_SISIMAI),
    (None, "552 1 Requested mail action aborted, mailbox not found", 10, YAHOO_SISIMAI),
    (
        None,
        "554 delivery error: dd Sorry, your message to nobody@yahoo.com cannot be delivered. "
        "This account is over quota.",
        22,
        YAHOO_HELP_OLD,
    ),
    (None, "421 Resources temporarily unavailable. Please try again later.", 70, YAHOO_HELP),
    (
        None,
        "451 VS1-IP Excessive unknown recipients - possible Open Relay (#4.1.8)",
        70,
        YAHOO_HELP,
    ),
    (None, "450 User is receiving mail too quickly", 70, YAHOO_SISIMAI),
    (None, "550 relaying denied for <nobody@yahoo.com>", 54, YAHOO_SISIMAI),
    # --- Apple iCloud --------------------------------------------------------------------------
    (None, "550 5.1.1 <nobody@icloud.com>: user does not exist", 10, ICLOUD),
    (
        None,
        "550 5.7.1 [CS01] Message rejected due to local policy. Please visit "
        "https://support.apple.com/en-us/HT204137",
        51,
        ICLOUD,
    ),
    (None, "550 5.7.1 Your message was rejected due to example.com DMARC policy.", 50, ICLOUD),
    (
        None,
        "550 5.7.1 Your email was rejected due to having a domain present in the Spamhaus "
        "DBL -- see https://www.spamhaus.org/dbl/",
        52,
        ICLOUD,
    ),
    (
        None,
        "421 4.7.1 Messages to nobody@icloud.com deferred due to excessive volume. Try again "
        "later - https://support.apple.com/en-us/HT204137",
        70,
        ICLOUD,
    ),
    (None, "451 4.7.1 Service unavailable - try again later", 70, ICLOUD),
    # --- Comcast -------------------------------------------------------------------------------
    (None, "421 [Too many sessions opened]", 70, COMCAST),
    (None, "421 [Reverse DNS failure : Try again later]", 50, COMCAST),
    # --- GMX, web.de, T-Online, AOL, Freenet ---------------------------------------------------
    (None, "550 <nobody@gmx.net>: Requested action not taken: mailbox unavailable", 10, GMX),
    (
        None,
        "550 <nobody@gmx.net>: Reject due to SPF policy. The originating IP of the message "
        "is not permitted by the domain owner",
        50,
        GMX,
    ),
    (
        None,
        "554-gmx.net (mxgmx104) Nemesis ESMTP Service not available 554-No SMTP service "
        "554-IP address is block listed. 554 For explanation visit https://postmaster.gmx.net/en/"
        "case?c=r0201&i=ip&v=192.0.2.25&r=1MNcgj-1ue23t3pyV-00S2YR",
        51,
        GMX_OWN,
    ),
    (
        None,
        "550 Benutzer hat das Speichervolumen ueberschritten. / User has exhausted allowed "
        "storage space.",
        22,
        GERMAN_ISPS,
    ),
    (None, "552 5.2.2 Over STORAGE quota", 22, GERMAN_ISPS),
    (None, "550 5.1.1 <nobody@t-online.de> user unknown", 10, GERMAN_ISPS),
    (None, "550 MAILBOX NOT FOUND", 10, GERMAN_ISPS),
    (
        None,
        "554 Refused. Your reverse DNS entry contains your IP address and a country code.",
        50,
        GERMAN_ISPS,
    ),
    (None, "552 Error: message too large", 23, GERMAN_ISPS),
    # --- Orange, La Poste, Free, SFR ------------------------------------------------------------
    (None, "550 5.2.0 Mail rejete. Mail rejected. ofr_506 [506]", 52, FRENCH_ISPS),
    (
        None,
        "550 mwinf5c04 ME Adresse IP source bloquee pour incident de spam. Client host "
        "blocked for spamming issues. OFR006_102 Ref",
        51,
        ORANGE,
    ),
    (None, "552 5.1.1 Boite du destinataire pleine. Recipient overquota.", 22, ORANGE),
    (
        None,
        "550 5.1.1 Adresse d au moins un destinataire invalide. Invalid recipient. LPN416",
        10,
        ORANGE,
    ),
    (None, "421 Too many connections, slow down. LPN105_104", 70, ORANGE),
    (
        None,
        "421 4.2.0 Service refuse. Veuillez essayer plus tard. Service refused, please try "
        "later. OFR005_505 [505]",
        70,
        ORANGE,
    ),
    (None, "550 spam detected", 52, FRENCH_ISPS),
    (None, "550 5.7.1 Message content rejected", 52, FRENCH_ISPS),
    # --- Mail.ru, nic.ru -----------------------------------------------------------------------
    (None, "550 spam message rejected", 52, MAILRU_SPAM),
    (
        None,
        "550 5.7.1 This message was not accepted due to domain owner DMARC policy "
        "(RFC 7489) https://help.mail.ru/mail-help/postmaster/dmarc",
        50,
        MAILRU_DMARC,
    ),
    (None, "451 example.ru prohibited. Disk quota exceeded", 22, NICRU),
    # --- SparkPost's own examples ----------------------------------------------------------------
    (
        "5.4.7",
        "554 5.4.7 [internal] message timeout (last transfail: 454 4.4.4 [internal] no MX "
        "or A for domain)",
        21,
        SPARKPOST_DELAYS,
    ),
    ("4.3.0", "451 4.3.0 [internal] Sending IP temporarily suspended", 70, SPARKPOST_DELAYS),
    # --- RFC 5321 standard reply texts ---------------------------------------------------------
    (None, "550 Requested action not taken: mailbox unavailable", 10, RFC5321),
    (None, "552 Requested mail action aborted: exceeded storage allocation", 22, RFC5321),
    (None, "554 Transaction failed", 40, RFC5321),
    # --- Postfix: remote rejects as Postfix's smtpd words them, and Postfix's own reasons -------
    (
        None,
        "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in virtual "
        "mailbox table",
        10,
        POSTFIX_SMTPD,
    ),
    (None, "554 5.7.1 <nobody@example.com>: Relay access denied", 54, POSTFIX_SMTPD),
    (
        None,
        "554 5.7.1 <sender@example.org>: Sender address rejected: Access denied",
        50,
        PASTEBIN_SENDER,
    ),
    (
        None,
        "550 <example.org[192.0.2.25]>: Client host rejected: Access Denied",
        50,
        PASTEBIN_CLIENT,
    ),
    (
        None,
        "554 5.7.1 Service unavailable; Client host [192.0.2.25] blocked using ix.dnsbl.manitu.net",
        51,
        SWISS_ISP,
    ),
    (
        None,
        "450 4.7.1 Client host rejected: cannot find your hostname, [192.0.2.25]",
        50,
        SWISS_ISP,
    ),
    (
        None,
        "450 4.1.1 <nobody@example.com>: Recipient address rejected: unverified address: "
        "host mx.example.com[192.0.2.1] said: 550 5.1.1 User unknown",
        20,
        POSTFIX_SMTPD,
    ),
    (
        "5.4.4",
        "Host or domain name not found. Name service error for name=example.invalid "
        "type=A: Host not found",
        21,
        POSTFIX_ADDR,
    ),
    (
        "4.4.3",
        "Host or domain name not found. Name service error for name=example.com type=MX: "
        "Host not found, try again",
        21,
        POSTFIX_ADDR,
    ),
    (
        "4.4.3",
        "delivery temporarily suspended: Host or domain name not found. Name service "
        "error for name=example.com type=MX: Host not found, try again",
        21,
        POSTFIX_ADDR,
    ),
    ("4.4.1", "connect to mx.example.com[192.0.2.1]:25: Connection timed out", 24, POSTFIX_CONNECT),
    ("4.4.1", "connect to mx.example.com[192.0.2.1]:25: Connection refused", 24, POSTFIX_CONNECT),
    (
        "4.4.1",
        "delivery temporarily suspended: connect to mx.example.com[192.0.2.1]:25: "
        "Connection timed out",
        24,
        POSTFIX_CONNECT,
    ),
    (
        "4.4.2",
        "lost connection with mx.example.com[192.0.2.1] while receiving the initial "
        "server greeting",
        24,
        POSTFIX_PROTO,
    ),
    (
        "4.4.2",
        "conversation with mx.example.com[192.0.2.1] timed out while sending end of data "
        "-- message may be sent more than once",
        24,
        POSTFIX_PROTO,
    ),
    (
        "5.3.4",
        "message size 31457280 exceeds size limit 10240000 of server mx.example.com[192.0.2.1]",
        23,
        POSTFIX_PROTO,
    ),
    ("5.1.1", 'unknown user: "nobody"', 10, POSTFIX_LOCAL),
    ("5.4.6", "mail for example.com loops back to myself", 40, POSTFIX_LOOP),
    # --- Exim ----------------------------------------------------------------------------------
    ("5.4.4", "all relevant MX records point to non-existent hosts", 21, EXIM),
    ("5.1.2", "Unrouteable address", 21, EXIM),
    ("4.4.7", "retry timeout exceeded", 24, EXIM),
    (None, "550 Administrative prohibition", 50, EXIM),
    # --- qmail ---------------------------------------------------------------------------------
    (None, "Sorry, no mailbox here by that name. (#5.1.1)", 10, QMAIL),
    (None, "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)", 24, QMAIL),
    (None, "Sorry, I couldn't find any host named example.invalid. (#5.1.2)", 21, QMAIL),
    # --- Sendmail (stat= of its log lines) -----------------------------------------------------
    ("5.1.1", "User unknown", 10, SENDMAIL),
    ("4.0.0", "Deferred: Connection refused by mx.example.com.", 24, SENDMAIL),
    ("4.0.0", "Deferred: Connection timed out with mx.example.com.", 24, SENDMAIL),
    ("5.1.2", "Host unknown (Name server: example.invalid: host not found)", 21, SENDMAIL),
    ("4.4.3", "Deferred: Name server: example.com.: host name lookup failure", 21, SENDMAIL),
]
