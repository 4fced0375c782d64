/// Writes a state dict of contiguous tensors as `torch.save` does (a zip of
/// stored entries: `ARCHIVE/data.pkl`, one storage per tensor under
/// `ARCHIVE/data/`, `byteorder`, `version`, ...), so that tests and the
/// benchmark can make PyTorch checkpoints without torch. torch loads them
/// with `weights_only=True`.
public enum TorchCheckpointWriter {
    /// Writes `tensors` to `path` (atomically); `contents` hands tensor `i`'s
    /// bytes, in order, to the writer it is given.
    public static func write(to path: String, tensors: [TensorInfo], archiveName: String = "archive", overwrite: Bool,
                             contents: (_ index: Int, _ write: (UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws {
        let output = try AtomicOutput(destination: path, kind: .file, overwrite: overwrite, inputs: [])
        do {
            let zip = StoredZipWriter(output: try output.makeWriter())
            let folder = archiveName + "/"
            try zip.add(folder + "data.pkl", bytes: statePickle(tensors))
            try zip.add(folder + ".format_version", bytes: Array("1".utf8))
            try zip.add(folder + ".storage_alignment", bytes: Array("64".utf8))
            try zip.add(folder + "byteorder", bytes: Array("little".utf8))
            for (i, tensor) in tensors.enumerated() {
                try zip.add(folder + "data/\(i)", length: UInt64(tensor.byteCount)) { write in
                    try withoutActuallyEscaping(write) { try contents(i, $0) }
                }
            }
            try zip.add(folder + "version", bytes: Array("3\n".utf8))
            try zip.finish()
            try output.commit()
        } catch {
            output.discard()
            throw error
        }
    }

    /// The pickle of a dict mapping each name to a tensor over its own
    /// storage (key: its position), as torch pickles it (protocol 2, without memo).
    public static func statePickle(_ tensors: [TensorInfo]) -> [UInt8] {
        var p = PickleBytes()
        p.raw([0x80, 0x02, 0x7D, 0x28])  // PROTO 2, EMPTY_DICT, MARK
        for (i, tensor) in tensors.enumerated() {
            let typed = TorchGlobal.storageTypes.first { $0.value == tensor.dtype }?.key
            let dtypeName = TorchGlobal.dtypes.first { $0.value == tensor.dtype }?.key
            p.string(tensor.name)
            p.global("torch._utils", typed == nil ? "_rebuild_tensor_v3" : "_rebuild_tensor_v2")
            p.raw([0x28, 0x28])  // MARK (arguments), MARK (storage record)
            p.string("storage")
            if let typed { p.global("torch", typed) } else { p.global("torch.storage", "UntypedStorage") }
            p.string(String(i))
            p.string("cpu")
            p.integer(typed == nil ? tensor.byteCount : tensor.elementCount)
            p.raw([0x74, 0x51])  // TUPLE, BINPERSID
            p.integer(0)
            p.tuple(tensor.shape)
            var strides = [Int](repeating: 1, count: tensor.shape.count)
            for k in stride(from: tensor.shape.count - 2, through: 0, by: -1) { strides[k] = strides[k + 1] * max(tensor.shape[k + 1], 1) }
            p.tuple(strides)
            p.raw([0x89])  // NEWFALSE
            p.global("collections", "OrderedDict")
            p.raw([0x29, 0x52])  // EMPTY_TUPLE, REDUCE
            if typed == nil, let dtypeName { p.global("torch", dtypeName) }
            p.raw([0x74, 0x52])  // TUPLE, REDUCE
        }
        p.raw([0x75, 0x2E])  // SETITEMS, STOP
        return p.bytes
    }
}

/// Pickle instructions, as bytes.
struct PickleBytes {
    var bytes: [UInt8] = []

    mutating func raw(_ b: [UInt8]) { bytes += b }

    mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        bytes += [0x58] + le(UInt32(utf8.count), 4) + utf8
    }

    mutating func global(_ module: String, _ name: String) {
        bytes += [0x63] + Array(module.utf8) + [0x0A] + Array(name.utf8) + [0x0A]
    }

    mutating func integer(_ n: Int) {
        switch n {
        case 0..<256: bytes += [0x4B, UInt8(n)]
        case 256..<65536: bytes += [0x4D] + le(UInt16(n), 2)
        case 65536...Int(Int32.max): bytes += [0x4A] + le(UInt32(n), 4)
        default: bytes += [0x8A, 8] + le(UInt64(bitPattern: Int64(n)), 8)
        }
    }

    mutating func tuple(_ values: [Int]) {
        if values.isEmpty { return bytes.append(0x29) }
        if values.count > 3 { bytes.append(0x28) }
        for v in values { integer(v) }
        bytes.append(values.count > 3 ? 0x74 : 0x84 + UInt8(values.count))
    }
}
