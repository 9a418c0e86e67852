package testutil

// KuboVector is a file of Size bytes from Reader(KuboSeed, Size) and the CID
// Kubo gives it.
type KuboVector struct {
	Size int64
	Cid  string
}

// KuboSeed is the generator seed of every KuboVector.
const KuboSeed = 7

// KuboVectors were produced by a real Kubo v0.43.1 (built from its Go module as
// .ci/kubo.sh does), with a repo made by `ipfs init --profile
// test,unixfs-v1-2025`, from the bytes of `go run ./internal/testutil/gen`:
//
//	go run ./internal/testutil/gen -seed 7 -size SIZE | ipfs add -Q --only-hash
//
// .ci/kubo-vectors.sh recomputes them with a live Kubo and fails if any
// differs. The 1 GiB + 1 MiB file has 1025 leaves, more than one node holds,
// so its DAG has a second layer.
var KuboVectors = []KuboVector{
	{0, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"},
	{1, "bafkreicnpm7pomakz5ymrewygj63qjzpkrbuvw6gdjhbgcswhs2zudipi4"},
	{1<<20 - 1, "bafkreic4fkewzvpba6tpjrbkrdgzbdsa2div5nmrfj2qph3ikvejxb4jqi"},
	{1 << 20, "bafkreid2bnnnr7s37w53qknfgfojdft6rgd4hlstbiusggnkihcbygzcny"},
	{1<<20 + 1, "bafybeibvwlmmzbw63a6vzy7tbea2mwv3ytabb3ju6drs4gu375qq4mcjpi"},
	{10<<20 + 7, "bafybeica3twypz2hsso6ho2j7mu3lxyaku3wrg665wpsdqnb5p5f2avdpq"},
	{1<<30 + 1<<20, "bafybeifwwvwdxilgox4wvj3oeuu3to2tpn3izjrlnjrolm5jmqonpscalq"},
}
