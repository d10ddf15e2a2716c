/*
 * av_log bridge: FFmpeg's log callback receives a printf format and a va_list, which Rust
 * cannot consume portably. This shim formats the line with FFmpeg's own
 * av_log_format_line2 and hands the finished text to Rust (vidax_av_log_emit), which
 * re-emits it through `tracing`, so FFmpeg's warnings land in logs/events.jsonl.
 */
#include <stdarg.h>
#include <string.h>
#include <libavutil/log.h>

/* Implemented in Rust (src/media/ffi.rs). `msg` is NUL-terminated and valid for the call only. */
extern void vidax_av_log_emit(int level, const char *msg);

static int vidax_max_level = AV_LOG_WARNING;

static void vidax_av_log_callback(void *avcl, int level, const char *fmt, va_list vl)
{
    char line[1024];
    int print_prefix = 1;
    if (level > vidax_max_level)
        return;
    av_log_format_line2(avcl, level, fmt, vl, line, (int)sizeof line, &print_prefix);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    if (n == 0)
        return;
    vidax_av_log_emit(level, line);
}

/* Routes all FFmpeg logging at or above `max_level` (an AV_LOG_* value) to Rust. */
void vidax_install_av_log_bridge(int max_level)
{
    vidax_max_level = max_level;
    av_log_set_level(max_level);
    av_log_set_callback(vidax_av_log_callback);
}
