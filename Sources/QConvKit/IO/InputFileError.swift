import Glibc

/// Why a path cannot be read as an input file at all (exit 3): it is not a
/// regular file. A named pipe would block `open` until a writer appears, a
/// device or socket is not a file of any format qconv reads.
public enum InputFileError: QConvError, Equatable {
    /// The path is a named pipe, a device or a socket where a file is read.
    case notARegularFile(path: String, kind: String)

    public var category: ErrorCategory { .invalidInput }

    public var description: String {
        switch self {
        case let .notARegularFile(path, kind):
            return "\(path): is \(kind), not a regular file; qconv reads regular files (and model folders) only"
        }
    }

    /// What a `st_mode` that is not a regular file is, in words.
    static func kindDescription(mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFIFO: return "a named pipe (FIFO)"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFSOCK: return "a socket"
        default: return "not a regular file"
        }
    }
}
