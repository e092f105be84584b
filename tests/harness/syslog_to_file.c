/* A stand-in for a syslog daemon, for a Sendmail run where none listens on /dev/log (the
 * test machine has no syslog daemon, and the namespace runs share its /dev). Preloaded into
 * Sendmail (LD_PRELOAD), it takes syslog()'s messages and appends them to the file named by
 * SMTPAPI_SYSLOG_FILE at load time (Sendmail clears its environment later), one line each
 * with the time stamp, host name and tag rsyslog writes in /var/log/mail.log. Facilities
 * other than mail are dropped, as a mail.* rule would. Built by tests/harness/sendmail_log.py.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static char path[4096];
static char ident[64] = "sendmail";
static int facility = LOG_MAIL;

__attribute__((constructor)) static void remember_path(void) {
    const char *p = getenv("SMTPAPI_SYSLOG_FILE");
    if (p) snprintf(path, sizeof path, "%s", p);
}

void openlog(const char *tag, int option, int fac) {
    (void)option;
    if (tag) snprintf(ident, sizeof ident, "%s", tag);
    if (fac) facility = fac;
}

void closelog(void) {}

void vsyslog(int priority, const char *format, va_list ap) {
    int saved = errno;
    if (!path[0] || ((priority & LOG_FACMASK) ? (priority & LOG_FACMASK) : facility) != LOG_MAIL)
        return;
    char message[8192], line[8500], stamp[32];
    errno = saved; /* %m */
    vsnprintf(message, sizeof message, format, ap);
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%b %e %H:%M:%S", &tm);
    char host[256] = "localhost";
    gethostname(host, sizeof host);
    int n = snprintf(line, sizeof line, "%s %s %s[%d]: %s\n", stamp, host, ident, (int)getpid(),
                     message);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd >= 0) {
        if (write(fd, line, n > (int)sizeof line ? (int)sizeof line : n) < 0) { /* dropped */ }
        close(fd);
    }
    errno = saved;
}

void syslog(int priority, const char *format, ...) {
    va_list ap;
    va_start(ap, format);
    vsyslog(priority, format, ap);
    va_end(ap);
}

/* _FORTIFY_SOURCE builds (Debian's) call these instead. */
void __vsyslog_chk(int priority, int flag, const char *format, va_list ap) {
    (void)flag;
    vsyslog(priority, format, ap);
}

void __syslog_chk(int priority, int flag, const char *format, ...) {
    (void)flag;
    va_list ap;
    va_start(ap, format);
    vsyslog(priority, format, ap);
    va_end(ap);
}
