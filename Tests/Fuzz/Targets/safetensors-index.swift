// model.safetensors.index.json of a sharded folder whose two shards are valid:
// the index is parsed and checked against them, then the model is read.
import Glibc
@testable import QConvKit

private let folder: String = {
    let path = fuzzScratch + "/sharded"
    mkdir(path, 0o755)
    // Two valid shards: "a" (2 x F32) in the first, "b" (2 x F16) in the second.
    func shard(_ name: String, _ header: String, _ data: [UInt8]) {
        let json = Array(header.utf8)
        let bytes = (0..<8).map { UInt8(truncatingIfNeeded: UInt64(json.count) >> (8 * $0)) } + json + data
        _ = bytes.withUnsafeBufferPointer { writeScratch("sharded/" + name, $0.baseAddress!, $0.count) }
    }
    shard("model-00001-of-00002.safetensors", #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, [0, 0, 128, 63, 0, 0, 0, 64])
    shard("model-00002-of-00002.safetensors", #"{"b":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#, [0, 60, 0, 64])
    return path
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    _ = folder
    _ = writeScratch("sharded/model.safetensors.index.json", data, size)
    readModelAsEveryCommandDoes(folder)
    return 0
}
