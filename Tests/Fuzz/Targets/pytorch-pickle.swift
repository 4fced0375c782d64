// The pickle of a PyTorch checkpoint (`data.pkl`), put into a valid zip
// archive with the other entries torch writes and eight storages of 4 KiB,
// so that mutations reach the pickle machine and the rebuild of tensors
// instead of the zip reader.
@testable import QConvKit

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let path = fuzzScratch + "/pickled.bin"
    let pickle = UnsafeRawBufferPointer(start: data, count: size)
    let entries: [(String, [UInt8])] = [("archive/.format_version", Array("1".utf8)), ("archive/.storage_alignment", Array("64".utf8)),
                                        ("archive/byteorder", Array("little".utf8))]
        + (0..<8).map { ("archive/data/\($0)", [UInt8](repeating: UInt8(truncatingIfNeeded: $0 &* 37), count: 4096)) }
        + [("archive/version", Array("3\n".utf8))]
    do {
        let output = try FileSystem.createFile(path)
        let zip = StoredZipWriter(output: output)
        try zip.add("archive/data.pkl", length: UInt64(size)) { write in try write(pickle) }
        for (name, bytes) in entries {
            try zip.add(name, length: UInt64(bytes.count)) { write in try bytes.withUnsafeBytes { try write($0) } }
        }
        try zip.finish()
    } catch {
        preconditionFailure("cannot write \(path): \(error)")
    }
    readModelAsEveryCommandDoes(path)
    return 0
}
