import Foundation
import QConvKit

/// Pickle instructions for crafting state dicts, good and hostile.
public struct Pickle {
    public var bytes: [UInt8] = [0x80, 0x02]

    public init() {}

    public mutating func op(_ b: UInt8...) { bytes += b }
    public mutating func string(_ s: String) { bytes += [0x58] + le32(UInt32(s.utf8.count)) + Array(s.utf8) }
    public mutating func global(_ module: String, _ name: String) { bytes += [0x63] + Array("\(module)\n\(name)\n".utf8) }
    public mutating func int(_ n: Int) {
        if (0..<256).contains(n) { bytes += [0x4B, UInt8(n)] } else { bytes += [0x8A, 8] + (0..<8).map { UInt8(truncatingIfNeeded: n >> (8 * $0)) } }
    }
    public mutating func tuple(_ values: [Int]) {
        bytes.append(0x28)
        values.forEach { int($0) }
        bytes.append(0x74)
    }

    /// `_rebuild_tensor_v2(('storage', torch.<storage>, key, 'cpu', count), offset, shape, strides, False, OrderedDict())`.
    public mutating func tensor(storage: String = "FloatStorage", key: String, count: Int, offset: Int = 0, shape: [Int], strides: [Int]) {
        global("torch._utils", "_rebuild_tensor_v2")
        op(0x28, 0x28)
        string("storage")
        global("torch", storage)
        string(key)
        string("cpu")
        int(count)
        op(0x74, 0x51)
        int(offset)
        tuple(shape)
        tuple(strides)
        op(0x89)
        global("collections", "OrderedDict")
        op(0x29, 0x52, 0x74, 0x52)
    }

    /// A dict of `entries` (each adds a key and a value), then STOP.
    public static func stateDict(_ entries: [(String, (inout Pickle) -> Void)]) -> [UInt8] {
        var p = Pickle()
        p.op(0x7D, 0x28)
        for (key, value) in entries {
            p.string(key)
            value(&p)
        }
        p.op(0x75, 0x2E)
        return p.bytes
    }

    private func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
}

/// Writes a zip of stored entries, as torch lays one out (`StoredZipWriter`).
public func writeZip(_ path: String, _ entries: [(String, [UInt8])]) throws {
    let zip = StoredZipWriter(output: try FileSystem.createFile(path))
    for (name, bytes) in entries { try zip.add(name, bytes: bytes) }
    try zip.finish()
}

/// A torch checkpoint of `pickle` with storages `data/KEY`.
public func writeTorchCheckpoint(_ path: String, pickle: [UInt8], storages: [String: [UInt8]] = [:]) throws {
    try writeZip(path, [("archive/data.pkl", pickle), ("archive/byteorder", Array("little".utf8))]
                    + storages.sorted { $0.key < $1.key }.map { ("archive/data/\($0.key)", $0.value) })
}

/// `count` float32 values 0, 1, 2, ... as little-endian bytes.
public func floatBytes(_ count: Int) -> [UInt8] {
    (0..<count).flatMap { i -> [UInt8] in let b = Float(i).bitPattern; return (0..<4).map { UInt8(truncatingIfNeeded: b >> (8 * $0)) } }
}
