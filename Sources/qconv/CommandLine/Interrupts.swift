import Glibc
import QConvKit

/// What qconv does when told to stop (Ctrl-C, `kill`, a closed terminal):
/// clear the progress line, remove every temporary output, say so, then die
/// of the signal as if it had not been handled, so that the caller sees the
/// usual status.
///
/// The signals are blocked in every thread, and one thread waits for them
/// with `sigwait`: the cleanup then runs as ordinary code, not in a signal
/// handler, and may take locks and allocate.
enum Interrupts {
    static let signals: [Int32] = [SIGINT, SIGTERM, SIGHUP]

    /// A signal came: the temporary outputs are being removed, and the
    /// process is about to die of the signal.
    private static let stopping = Locked(false)

    /// Called with a command's error: when a signal came, the error is most
    /// likely the command finding its temporary output gone, which is not the
    /// user's to see; this thread then waits for the signal to end the process.
    static func waitIfStopping() {
        guard stopping.withLock({ $0 }) else { return }
        while true { pause() }
    }

    /// Call first in `main`, before any other thread exists (threads inherit the mask).
    static func install() {
        // Past the file size limit (`ulimit -f`), write(2) then fails with
        // EFBIG, an I/O error after which the output is discarded, instead of
        // the process dying of SIGXFSZ with its temporary file left behind.
        signal(SIGXFSZ, SIG_IGN)
        var set = signalSet()
        pthread_sigmask(SIG_BLOCK, &set, nil)
        var thread = pthread_t()
        guard pthread_create(&thread, nil, { _ in Interrupts.waitAndStop() }, nil) == 0 else { return }
        pthread_detach(thread)
    }

    private static func signalSet() -> sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for number in signals { sigaddset(&set, number) }
        return set
    }

    private static func waitAndStop() -> UnsafeMutableRawPointer? {
        var set = signalSet()
        var received: Int32 = 0
        guard sigwait(&set, &received) == 0 else { return nil }
        stopping.withLock { $0 = true }
        ProgressLine.clearForInterruption()
        let hadOutput = !TemporaryOutputs.paths.isEmpty
        TemporaryOutputs.removeAll()
        fputs(hadOutput ? "qconv: interrupted, nothing written\n" : "qconv: interrupted\n", stderr)
        signal(received, SIG_DFL)
        var one = sigset_t()
        sigemptyset(&one)
        sigaddset(&one, received)
        pthread_sigmask(SIG_UNBLOCK, &one, nil)
        raise(received)
        return nil
    }
}
