/// The formats qconv reads, told apart by their bytes (see `Model.open`).
public enum ModelFormat: Equatable, Sendable {
    /// One safetensors file.
    case safetensorsFile
    /// A model folder with one safetensors file (`model.safetensors`, or the only one).
    case safetensorsFolder
    /// A model folder with `model.safetensors.index.json` and its shards.
    case safetensorsShardedFolder
    /// A qconv container (docs/FORMAT.md).
    case container
    /// transformers' layout of a bitsandbytes-quantized model (a file, a
    /// folder, or a sharded folder): weights stored as pieces beside a
    /// quant state (docs/FORMAT.md).
    case bitsandbytes(Checkpoint.Layout)

    /// One PyTorch checkpoint (a zip archive with `data.pkl`, torch >= 1.6).
    case pytorchFile
    /// A model folder with `pytorch_model.bin` and no safetensors weights.
    case pytorchFolder
    /// A model folder with `pytorch_model.bin.index.json` and its shards, and no safetensors weights.
    case pytorchShardedFolder

    /// The name reports use: "safetensors", "safetensors-folder",
    /// "safetensors-sharded-folder", "qconv-container", "bitsandbytes",
    /// "bitsandbytes-folder", "bitsandbytes-sharded-folder", "pytorch",
    /// "pytorch-folder" or "pytorch-sharded-folder".
    public var name: String {
        switch self {
        case .safetensorsFile: return "safetensors"
        case .safetensorsFolder: return "safetensors-folder"
        case .safetensorsShardedFolder: return "safetensors-sharded-folder"
        case .container: return "qconv-container"
        case .bitsandbytes(.file): return "bitsandbytes"
        case .bitsandbytes(.folder): return "bitsandbytes-folder"
        case .bitsandbytes(.shardedFolder): return "bitsandbytes-sharded-folder"
        case .pytorchFile: return "pytorch"
        case .pytorchFolder: return "pytorch-folder"
        case .pytorchShardedFolder: return "pytorch-sharded-folder"
        }
    }

    /// How a container's provenance describes its source: "safetensors file",
    /// "model folder", "sharded model folder", "qconv container", "PyTorch
    /// file", "PyTorch model folder" or "sharded PyTorch model folder".
    public var layoutDescription: String {
        switch self {
        case .safetensorsFile: return "safetensors file"
        case .safetensorsFolder: return "model folder"
        case .safetensorsShardedFolder: return "sharded model folder"
        case .container: return "qconv container"
        case .bitsandbytes(let layout): return "bitsandbytes " + layout.rawValue
        case .pytorchFile: return "PyTorch file"
        case .pytorchFolder: return "PyTorch model folder"
        case .pytorchShardedFolder: return "sharded PyTorch model folder"
        }
    }

    /// Whether the format is a folder (with side files) rather than one file.
    public var isFolder: Bool {
        switch self {
        case .safetensorsFolder, .safetensorsShardedFolder, .pytorchFolder, .pytorchShardedFolder: return true
        case .safetensorsFile, .container, .pytorchFile: return false
        case .bitsandbytes(let layout): return layout != .file
        }
    }

    /// Whether the format stores quantized tensors, keeping the others exactly
    /// as they were in the source (so `verify` requires them identical).
    public var storesQuantizedTensors: Bool {
        switch self {
        case .container, .bitsandbytes: return true
        case .safetensorsFile, .safetensorsFolder, .safetensorsShardedFolder, .pytorchFile, .pytorchFolder, .pytorchShardedFolder: return false
        }
    }
}

/// What `Model.open` looks at to tell formats apart: the first bytes of a
/// file, or the names in a folder. Never the path's extension.
public struct FormatProbe: Sendable {
    public enum Kind: Sendable {
        /// A regular file: its size and first bytes (up to 16).
        case file(size: UInt64, head: [UInt8])
        /// A folder: the names in it, sorted.
        case folder(names: [String])
    }

    public let path: String
    public let kind: Kind

    /// Looks at `path`.
    ///
    /// - Throws: `IOError` when it does not exist or cannot be read.
    public init(path: String) throws {
        self.path = path
        switch FileSystem.kind(of: path) {
        case .missing:
            throw IOError("open", path: path, errno: .noSuchFileOrDirectory)
        case .directory:
            kind = .folder(names: try FileSystem.contents(of: path))
        case .file, .other:
            let file = try ReadableFile(path: path)
            kind = .file(size: file.size, head: try file.readBytes(at: 0, count: Int(min(file.size, 16))))
        }
    }

    /// Whether a file starts with `magic`.
    public func starts(with magic: [UInt8]) -> Bool {
        guard case .file(_, let head) = kind else { return false }
        return head.starts(with: magic)
    }
}

/// One format's reader: recognizes the format from a probe and opens it as a `Model`.
///
/// Adding a format to qconv is adding one of these to `Model.readers`.
public protocol ModelReader {
    /// The format `probe` shows, if this reader reads it.
    static func recognize(_ probe: FormatProbe) -> ModelFormat?
    /// Opens `probe.path`, validating every header before anything else happens.
    static func open(_ probe: FormatProbe, as format: ModelFormat) throws -> Model
}

/// Files qconv recognizes but does not read, so that it can say what it was given.
enum UnreadableFormat {
    static let known: [(magic: [UInt8], what: String)] = [
        (Array("GGUF".utf8), "a GGUF file (llama.cpp)"),
        // torch.save before 1.6: pickles, the first of them the magic number 0x1950a86a20f9469cfc6c.
        ([0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19],
         "a Python pickle (a legacy PyTorch checkpoint, saved by torch before 1.6 or with _use_new_zipfile_serialization=False; load and save it again with a current torch)"),
        ([0x80, 0x02], "a Python pickle (a legacy PyTorch checkpoint)"),
        ([0x80, 0x03], "a Python pickle (a legacy PyTorch checkpoint)"),
        ([0x80, 0x04], "a Python pickle (a legacy PyTorch checkpoint)"),
        ([0x80, 0x05], "a Python pickle (a legacy PyTorch checkpoint)"),
        (Array("\u{89}HDF".utf8), "an HDF5 file (a Keras checkpoint)"),
    ]

    /// What the probed file is, when it is one of the known unreadable kinds.
    /// A file shaped like safetensors (a header length, then `{`) is never
    /// one: a 640-byte header's length starts with the bytes of a pickle's magic.
    static func describe(_ probe: FormatProbe) -> String? {
        guard case .file(_, let head) = probe.kind, !(head.count > 8 && head[8] == UInt8(ascii: "{")) else { return nil }
        return known.first { probe.starts(with: $0.magic) }?.what
    }
}

/// Why a path could not be opened as a model at all (exit 3).
public enum ModelFormatError: QConvError, Equatable {
    /// A file qconv recognizes as another format, which it does not read.
    case unsupportedFormat(path: String, what: String)
    /// A folder holding nothing qconv reads.
    case noModel(folder: String)
    /// A model of one format where a command needs another (`dequant` of a safetensors folder).
    case wrongKind(path: String, found: ModelFormat, expected: String)

    public var category: ErrorCategory { .invalidInput }

    public var description: String {
        switch self {
        case let .unsupportedFormat(path, what):
            return "\(path): this is \(what), which qconv does not read; it reads safetensors files and model folders, PyTorch checkpoints (.bin, torch >= 1.6) and qconv containers"
        case let .noModel(folder):
            return "\(folder): no model.safetensors, model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json in this folder"
        case let .wrongKind(path, found, expected):
            return "\(path): this is a \(found.name) model; \(expected)"
        }
    }
}

extension Model {
    /// The readers `open` tries, in order; the first to recognize a path reads it.
    public static let readers: [ModelReader.Type] = [ContainerReader.self, PyTorchReader.self, BitsandbytesReader.self, SafeTensorsReader.self]

    /// Opens any model qconv reads: what it is comes from the file's first
    /// bytes or the folder's files, never from the name.
    ///
    /// - Throws: the reader's errors for an invalid file (exit 3),
    ///   `ModelFormatError` for something qconv does not read, `IOError` when
    ///   the path cannot be read (exit 4).
    public static func open(_ path: String) throws -> Model {
        let probe = try FormatProbe(path: path)
        if let what = UnreadableFormat.describe(probe) { throw ModelFormatError.unsupportedFormat(path: path, what: what) }
        for reader in readers {
            if let format = reader.recognize(probe) { return try ScaledFP8Checkpoint.pairing(try reader.open(probe, as: format)) }
        }
        throw ModelFormatError.noModel(folder: path)
    }

    /// What `path` is, without opening it further.
    public static func format(of path: String) throws -> ModelFormat? {
        let probe = try FormatProbe(path: path)
        return readers.lazy.compactMap { $0.recognize(probe) }.first
    }
}
