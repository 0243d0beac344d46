%% quicdist_etf_helper: the Erlang side of quicdist's golden-vector tests.
%%
%% Written for quicdist's own test suite (tests/test_etf_vectors.py,
%% tests/test_etf_otp.py). Compile with `erlc -o DIR quicdist_etf_helper.erl`
%% and run one or more jobs in a single VM:
%%
%%   erl -noinput -pa DIR -setcookie quicdist_test \
%%       -start_epmd false -dist_listen false \
%%       -eval 'quicdist_etf_helper:main(init:get_plain_arguments())' \
%%       -extra JOB [, JOB ...]
%%
%% (-setcookie, -start_epmd false and -dist_listen false matter only for
%% gen ... dist=NODE: the node then gets a name and a creation without epmd,
%% a listen socket, or a ~/.erlang.cookie.)
%%
%% Jobs are separated by a lone "," argument. Each one is:
%%
%%   gen OUT [named=1] [seeds=S1:S2...] [count=N] [depth=D] [big=1] [dist=NODE] [gzip=1]
%%       Write golden vectors: the named terms, `count` random terms per seed
%%       (nested at most `depth` levels, default 4), the 1 MiB binary
%%       (big=1, with named=1), then (dist=NODE) start distribution as
%%       NODE (long names, no epmd, no listen socket) and add terms holding
%%       node-qualified pids, ports, refs and funs. Starting distribution
%%       changes node(), so a gen job with dist= must be the last job.
%%   check IN OUT
%%       For each (name, Erlang expression, options, bytes) in IN: evaluate
%%       the expression, binary_to_term the bytes, compare with =:=, and also
%%       compare the bytes with term_to_binary(Expected, Options).
%%   reencode IN OUT
%%       For each binary in IN: term_to_binary(binary_to_term(B),
%%       [{minor_version, 2}]), or the error.
%%
%% File formats (all integers unsigned big-endian):
%%
%%   gen output     "QDV1" Count:32, Count x Record, "QEND"
%%     Record       NameLen:16 Name TextLen:32 Text NForms:8 NForms x Form
%%     Form         LabelLen:8 Label Len:32 Bytes
%%   check input    "QDC1" Count:32, Count x
%%                  (NameLen:16 Name ExprLen:32 Expr OptsLen:32 Opts Len:32 Bytes)
%%   check output   "QDR1" Count:32, Count x
%%                  (NameLen:16 Name Status:8 BytesEqual:8 DetailLen:32 Detail
%%                   OtpLen:32 OtpBytes)
%%                  Status: 0 ok (=:=), 1 mismatch, 2 binary_to_term failed,
%%                  3 the expected expression failed.
%%   reencode input  "QDB1" Count:32, Count x (Len:32 Bytes)
%%   reencode output "QDR2" Count:32, Count x (Status:8 Len:32 Payload)
%%                  Status 0: Payload is the re-encoded term; 1: error text.
%%
%% Names, labels, texts and expressions are UTF-8. With gzip=1 the whole gen
%% output is gzip-compressed (zlib:gzip/1, no timestamp).
%%
%% Any failure prints a message to standard_error and halts with status 2;
%% success halts with 0. The VM never waits for input.

-module(quicdist_etf_helper).

-export([main/1]).
-export([mk_pid/4, mk_port/3, mk_ref/3]).
-export([named_terms/1, random_terms/3, dist_terms/0, forms/1]).

-define(FORMS, [{<<"v2">>, [{minor_version, 2}]},
                {<<"v1">>, []},
                {<<"v0">>, [{minor_version, 0}]},
                {<<"z6">>, [compressed]},
                {<<"z9">>, [{compressed, 9}]},
                {<<"z6v2">>, [compressed, {minor_version, 2}]},
                {<<"z9v2">>, [{compressed, 9}, {minor_version, 2}]}]).

%% ---------------------------------------------------------------------------
%% Entry point

main(Args) ->
    Status =
        try
            lists:foreach(fun run_job/1, split_jobs(Args, [], [])),
            0
        catch
            Class:Reason:Stack ->
                io:format(standard_error, "quicdist_etf_helper: ~tp:~tp~n~tp~n",
                          [Class, Reason, Stack]),
                2
        end,
    erlang:halt(Status).

split_jobs([], [], Acc) -> lists:reverse(Acc);
split_jobs([], Cur, Acc) -> lists:reverse([lists:reverse(Cur) | Acc]);
split_jobs([","| Rest], [], Acc) -> split_jobs(Rest, [], Acc);
split_jobs([","| Rest], Cur, Acc) -> split_jobs(Rest, [], [lists:reverse(Cur) | Acc]);
split_jobs([A | Rest], Cur, Acc) -> split_jobs(Rest, [A | Cur], Acc).

run_job(["gen", Out | Opts]) ->
    gen(Out, parse_opts(Opts));
run_job(["check", In, Out]) ->
    check(In, Out);
run_job(["reencode", In, Out]) ->
    reencode(In, Out);
run_job(Other) ->
    error({bad_job, Other}).

parse_opts(Opts) ->
    Known = ["named", "seeds", "count", "depth", "big", "dist", "gzip"],
    [case string:split(O, "=") of
         [K, V] -> case lists:member(K, Known) of
                       true -> {K, V};
                       false -> error({unknown_gen_option, O, Known})
                   end;
         _ -> error({bad_gen_option, O})
     end || O <- Opts].

opt(Key, Opts, Default) ->
    case lists:keyfind(Key, 1, Opts) of
        {_, V} -> V;
        false -> Default
    end.

%% ---------------------------------------------------------------------------
%% gen

gen(Out, Opts) ->
    Named = case opt("named", Opts, "0") of
                "1" -> named_terms(opt("big", Opts, "0") =:= "1");
                _ -> []
            end,
    Count = list_to_integer(opt("count", Opts, "0")),
    Seeds = [list_to_integer(S) || S <- string:lexemes(opt("seeds", Opts, ""), ":")],
    Depth = list_to_integer(opt("depth", Opts, "4")),
    Random = lists:append([random_terms(Seed, Count, Depth) || Seed <- Seeds]),
    %% Encode every local term before distribution may start: a local pid
    %% is encoded with the node's current name.
    Local = [record(Name, T) || {Name, T} <- Named ++ Random],
    Dist = case opt("dist", Opts, "") of
               "" -> [];
               Node ->
                   start_dist(list_to_atom(Node)),
                   [record(Name, T) || {Name, T} <- dist_terms()]
           end,
    Records = Local ++ Dist,
    Body = [<<"QDV1", (length(Records)):32>>, Records, <<"QEND">>],
    Data = case opt("gzip", Opts, "0") of
               "1" -> zlib:gzip(iolist_to_binary(Body));
               _ -> Body
           end,
    ok = file:write_file(Out, Data).

record(Name, T) ->
    Forms = forms(T),
    [str16(unicode:characters_to_binary(Name)),
     str32(summary(T)),
     <<(length(Forms)):8>>,
     [[<<(byte_size(L)):8>>, L, str32(B)] || {L, B} <- Forms]].

forms(T) ->
    [{Label, term_to_binary(T, Opts)} || {Label, Opts} <- ?FORMS].

summary(T) -> show(T, 300).

%% One line, at most about Limit characters, as UTF-8.
show(T, Limit) ->
    Text = io_lib:write(T, [{depth, 20}, {chars_limit, Limit}, {encoding, unicode}]),
    unicode:characters_to_binary(Text).

str16(B) -> [<<(byte_size(B)):16>>, B].
str32(B) -> [<<(byte_size(B)):32>>, B].

start_dist(Node) ->
    case net_kernel:start([Node, longnames]) of
        {ok, _} -> ok;
        {error, Reason} -> error({distribution_failed, Node, Reason})
    end.

%% ---------------------------------------------------------------------------
%% External pids, ports and refs built from their fields (the newest tags;
%% binary_to_term gives the real term, of any node).

atom_ext(A) ->
    B = atom_to_binary(A, utf8),
    case byte_size(B) of
        N when N < 256 -> <<119, N, B/binary>>;
        N -> <<118, N:16, B/binary>>
    end.

mk_pid(Node, Id, Serial, Creation) ->
    binary_to_term(<<131, 88, (atom_ext(Node))/binary, Id:32, Serial:32, Creation:32>>).

mk_port(Node, Id, Creation) ->
    binary_to_term(<<131, 120, (atom_ext(Node))/binary, Id:64, Creation:32>>).

mk_ref(Node, Creation, Ids) ->
    binary_to_term(<<131, 90, (length(Ids)):16, (atom_ext(Node))/binary, Creation:32,
                     << <<I:32>> || I <- Ids >>/binary>>).

%% ---------------------------------------------------------------------------
%% Named terms

neg_zero() ->
    <<F/float>> = <<1:1, 0:63>>,
    F.

float_bits(Bits) ->
    <<F/float>> = <<Bits:64>>,
    F.

%% Code points, so this file stays ASCII.
-define(E_ACUTE, 16#E9).
-define(O_UML, 16#F6).
-define(Y_UML, 16#FF).
-define(SNOWMAN, 16#2603).
-define(GRIN, 16#1F600).
-define(NIHON, [16#65E5, 16#672C]).

named_terms(Big) ->
    lists:append([ints(), floats(), atoms(), tuples(), lists(), improper(), binaries(Big),
                  bitstrings(), maps(), local_ids(), remote_ids(), funs(), nesting(),
                  misc()]).

ints() ->
    [{"int_0", 0}, {"int_1", 1}, {"int_255", 255}, {"int_256", 256}, {"int_m1", -1},
     {"int_m255", -255}, {"int_m256", -256},
     {"int_i32_max", 16#7FFFFFFF}, {"int_i32_min", -16#80000000},
     {"int_i32_max_plus_1", 16#80000000}, {"int_i32_min_minus_1", -16#80000001},
     {"int_u32_max", 16#FFFFFFFF}, {"int_i64_max", 16#7FFFFFFFFFFFFFFF},
     {"int_i64_min", -16#8000000000000000}, {"int_u64_max", 16#FFFFFFFFFFFFFFFF},
     {"int_2_64", 1 bsl 64}, {"int_m2_64", -(1 bsl 64)},
     {"big_255_bytes_max", (1 bsl 2040) - 1}, {"big_m255_bytes_max", -((1 bsl 2040) - 1)},
     {"big_256_bytes_min", 1 bsl 2040}, {"big_m256_bytes_min", -(1 bsl 2040)},
     {"big_4096_bits", (1 bsl 4095) + 16#DEADBEEF},
     {"big_10000_bits", (1 bsl 9999) + 12345},
     {"big_m30000_bits", -((1 bsl 30000) - 7)},
     {"big_pattern", binary:decode_unsigned(binary:copy(<<16#DEADBEEF:32>>, 100))},
     {"ints_list", [0, 1, -1, 255, 256, 1 bsl 31, -(1 bsl 31), 1 bsl 100]}].

floats() ->
    [{"float_0", 0.0}, {"float_neg_0", neg_zero()}, {"float_1", 1.0}, {"float_m1_5", -1.5},
     {"float_0_1", 0.1}, {"float_pi", math:pi()}, {"float_1e15", 1.0e15},
     {"float_1e16", 1.0e16}, {"float_third", 1 / 3}, {"float_0_3", 0.1 + 0.2},
     {"float_2_53_plus", 9007199254740993.0}, {"float_1e_300", 1.0e-300},
     {"float_min_subnormal", float_bits(1)},
     {"float_max_subnormal", float_bits(16#000FFFFFFFFFFFFF)},
     {"float_min_normal", float_bits(16#0010000000000000)},
     {"float_max", float_bits(16#7FEFFFFFFFFFFFFF)},
     {"float_m_max", float_bits(16#FFEFFFFFFFFFFFFF)},
     {"float_m_min_subnormal", float_bits(16#8000000000000001)},
     {"floats_list", [0.5, -0.25, 1.0e100, neg_zero()]}].

atoms() ->
    [{"atom_empty", ''}, {"atom_a", a}, {"atom_ok", ok}, {"atom_undefined", undefined},
     {"atom_true", true}, {"atom_false", false}, {"atom_nil", nil},
     {"atom_space", 'hello world'}, {"atom_quote", list_to_atom("it's \"q\"")},
     {"atom_latin1", list_to_atom([$h, ?E_ACUTE, $l, $l, $o])},
     {"atom_latin1_y_uml", list_to_atom([?Y_UML])},
     {"atom_utf8", list_to_atom(?NIHON)},
     {"atom_utf8_4byte", list_to_atom([?GRIN])},
     {"atom_mixed", list_to_atom([$a, ?E_ACUTE, ?SNOWMAN, ?GRIN])},
     {"atom_ascii_255", list_to_atom(lists:duplicate(255, $x))},
     {"atom_latin1_255", list_to_atom(lists:duplicate(255, ?E_ACUTE))},
     {"atom_utf8_255", list_to_atom(lists:duplicate(255, ?GRIN))},
     {"atom_utf8_85_3byte", list_to_atom(lists:duplicate(85, ?SNOWMAN))},
     {"atom_utf8_86_3byte", list_to_atom(lists:duplicate(86, ?SNOWMAN))},
     {"atoms_tuple", {true, false, undefined, ok, list_to_atom([?O_UML])}}].

tuples() ->
    [{"tuple_empty", {}}, {"tuple_1", {a}}, {"tuple_3", {1, two, <<"three">>}},
     {"tuple_255", list_to_tuple(lists:seq(1, 255))},
     {"tuple_256", list_to_tuple(lists:seq(1, 256))},
     {"tuple_1000_mixed", list_to_tuple([mixed(I) || I <- lists:seq(1, 1000)])},
     {"tuple_nested", {{}, {{}}, {a, {b, {c}}}}},
     {"tuple_ok_reply", {ok, [{<<"key">>, 42}], #{}}}].

mixed(I) ->
    case I rem 5 of
        0 -> I;
        1 -> float(I);
        2 -> list_to_atom("a" ++ integer_to_list(I rem 17));
        3 -> integer_to_binary(I);
        4 -> [I]
    end.

lists() ->
    [{"nil", []}, {"list_1", [a]}, {"string_abc", "abc"},
     {"string_all_bytes", lists:seq(0, 255)},
     {"string_1_byte", [0]},
     {"string_65535", [$a + I rem 26 || I <- lists:seq(1, 65535)]},
     {"list_65536_small_ints", [I rem 256 || I <- lists:seq(1, 65536)]},
     {"list_70000_small_ints", lists:duplicate(70000, 7)},
     {"list_256", [256]}, {"list_m1", [-1]}, {"list_byte_and_atom", [1, a]},
     {"list_unicode_string", [$h, ?E_ACUTE, ?SNOWMAN, ?GRIN]},
     {"list_of_nil", [[]]}, {"list_of_strings", ["ab", "", "cd"]},
     {"list_bools", [true, false]}, {"list_floats", [1.0, 2.5]},
     {"list_nested", [[1, [2, [3, [4]]]], [[[]]]]},
     {"list_mixed", [mixed(I) || I <- lists:seq(1, 100)]}].

improper() ->
    [{"improper_1", [1 | 2]}, {"improper_atoms", [a, b | c]},
     {"improper_binary_tail", [1, 2 | <<"x">>]},
     {"improper_nil_elem", [[] | a]}, {"improper_tuple_tail", [1 | {}]},
     {"improper_float_tail", [1 | 2.5]},
     {"improper_string_head", "ab" ++ foo},
     {"improper_map_tail", [x | #{a => 1}]},
     {"improper_alias_tag", [alias | make_ref()]},
     {"improper_nested", [[1 | 2] | [3 | 4]]},
     {"proper_string_tail", ["abc" | "def"]}].

binaries(Big) ->
    Bins = [{"bin_empty", <<>>}, {"bin_abc", <<"abc">>},
            {"bin_all_bytes", list_to_binary(lists:seq(0, 255))},
            {"bin_1000", binary:copy(<<1, 2, 3, 4, 5>>, 200)},
            {"bin_utf8", unicode:characters_to_binary([$h, ?E_ACUTE, ?SNOWMAN, ?GRIN])},
            {"bin_sub", binary:part(list_to_binary(lists:seq(0, 99)), 10, 50)},
            {"bin_compress_tie", <<"aaaaaaaaaaaaaaa">>},
            {"bin_compress_tie_2", <<16#2cbaf4a0:32, "aaaaaaaaaaaaaaaa">>},
            {"bin_incompressible", noise_binary(2000)},
            {"bins_list", [<<>>, <<0>>, <<"x">>]}],
    case Big of
        true -> Bins ++ [{"bin_1mib", big_binary()}];
        false -> Bins
    end.

%% 1 MiB of deterministic, not too compressible bytes.
big_binary() ->
    S0 = rand:seed_s(exsss, {1, 2, 3}),
    {Words, _} = lists:foldl(fun(_, {Acc, S}) ->
                                     {W, S1} = rand:uniform_s(1 bsl 32, S),
                                     {[<<(W - 1):32>> | Acc], S1}
                             end, {[], S0}, lists:seq(1, 1 bsl 18)),
    iolist_to_binary(Words).

noise_binary(N) ->
    S0 = rand:seed_s(exsss, {4, 5, 6}),
    {Bytes, _} = lists:foldl(fun(_, {Acc, S}) ->
                                     {B, S1} = rand:uniform_s(256, S),
                                     {[B - 1 | Acc], S1}
                             end, {[], S0}, lists:seq(1, N)),
    list_to_binary(Bytes).

bitstrings() ->
    [{"bits_1", <<1:1>>}, {"bits_3", <<5:3>>}, {"bits_7", <<0:7>>},
     {"bits_byte_and_7", <<255, 1:7>>}, {"bits_long", <<(binary:copy(<<"ab">>, 500))/binary, 6:3>>},
     {"bits_in_list", [<<1:1>>, <<>>, <<2:2>>]},
     {"bits_sub", begin <<_:3, Rest:13/bitstring, _/bitstring>> = <<"abcdef">>, Rest end}].

maps() ->
    Keys33 = [list_to_atom("k" ++ integer_to_list(I)) || I <- lists:seq(1, 33)],
    [{"map_empty", #{}}, {"map_1", #{a => 1}},
     {"map_int_float_keys", #{1 => int, 1.0 => float}},
     {"map_true_and_1", #{true => a, 1 => b}},
     {"map_list_key", #{[1, 2] => x}}, {"map_string_key", #{"abc" => 1, <<"abc">> => 2}},
     {"map_map_key", #{#{} => empty, #{a => 1} => one}},
     {"map_tuple_keys", #{{1, 2} => a, {} => b}},
     {"map_nested", #{a => #{b => #{c => []}}}},
     {"map_mixed_keys", #{1 => a, b => 2, <<"c">> => 3.0, [d] => [], {e} => {}, 2.5 => f}},
     {"map_32", maps:from_list([{I, I * I} || I <- lists:seq(1, 32)])},
     {"map_33", maps:from_list([{K, K} || K <- Keys33])},
     {"map_100_ints", maps:from_list([{I, I} || I <- lists:seq(1, 100)])},
     {"map_1000_mixed", maps:from_list([{mixed(I), I} || I <- lists:seq(1, 1000)])},
     {"map_pid_ref_keys", #{self() => pid, make_ref() => ref}},
     {"map_neg_zero_value", #{z => neg_zero()}},
     {"map_of_maps", maps:from_list([{I, #{I => [I]}} || I <- lists:seq(1, 40)])}].

local_ids() ->
    Dead = spawn(fun() -> ok end),
    Port = case erlang:ports() of
               [P | _] -> P;
               [] -> open_port({spawn, "true"}, [])
           end,
    [{"pid_self", self()}, {"pid_init", whereis(init)}, {"pid_dead", Dead},
     {"pid_text", list_to_pid("<0.5.6>")},
     {"ref_make", make_ref()}, {"ref_alias", erlang:alias()},
     {"ref_monitor", erlang:monitor(process, Dead)},
     {"ref_text", list_to_ref("#Ref<0.1.2.3>")},
     {"port_first", Port}, {"port_text", list_to_port("#Port<0.7>")},
     {"ids_tuple", {self(), make_ref(), Port}}].

remote_ids() ->
    R = 'remote@host',
    U = list_to_atom([$n, ?O_UML, $d, $e, $@, $h, ?O_UML, $s, $t]),
    N = atom_ext(R),
    OldAtom = <<100, 0, 11, "remote@host">>,
    [{"pid_remote", mk_pid(R, 1234, 5, 16#DEADBEEF)},
     {"pid_remote_max", mk_pid(R, 16#FFFFFFFF, 16#FFFFFFFF, 16#FFFFFFFF)},
     {"pid_remote_zero", mk_pid(R, 0, 0, 0)},
     {"pid_remote_unicode_node", mk_pid(U, 1, 2, 3)},
     {"pid_old_pid_ext", binary_to_term(<<131, 103, OldAtom/binary, 1:32, 2:32, 3>>)},
     %% No reference with 0 ids: OTP 25 writes one, but its binary_to_term
     %% rejects it, or crashes the VM (SIGSEGV), unless it ends the input.
     {"ref_remote_1_id", mk_ref(R, 1, [7])},
     {"ref_remote_2_ids", mk_ref(R, 1, [7, 8])},
     {"ref_remote_3_ids", mk_ref(R, 16#DEADBEEF, [1, 2, 3])},
     {"ref_remote_4_ids", mk_ref(R, 2, [1, 2, 3, 4])},
     {"ref_remote_5_ids_max", mk_ref(R, 16#FFFFFFFF, lists:duplicate(5, 16#FFFFFFFF))},
     {"ref_remote_unicode_node", mk_ref(U, 3, [1, 2, 3])},
     {"ref_old_new_reference_ext",
      binary_to_term(<<131, 114, 0, 2, N/binary, 2, 5:32, 6:32>>)},
     {"ref_old_reference_ext", binary_to_term(<<131, 101, OldAtom/binary, 5:32, 2>>)},
     {"port_remote", mk_port(R, 42, 7)},
     {"port_remote_v3_max", mk_port(R, (1 bsl 28) - 1, 7)},
     {"port_remote_v4_min", mk_port(R, 1 bsl 28, 7)},
     {"port_remote_u32_max", mk_port(R, 16#FFFFFFFF, 7)},
     {"port_remote_2_32", mk_port(R, 1 bsl 32, 7)},
     {"port_remote_u64_max", mk_port(R, 16#FFFFFFFFFFFFFFFF, 16#FFFFFFFF)},
     {"port_old_port_ext", binary_to_term(<<131, 102, OldAtom/binary, 9:32, 3>>)},
     {"port_new_port_ext", binary_to_term(<<131, 89, N/binary, 9:32, 16#ABCDEF01:32>>)},
     {"remote_ids_in_map", #{mk_pid(R, 1, 0, 9) => mk_ref(R, 9, [1, 2, 3]),
                             mk_port(R, 1, 9) => U}}].

funs() ->
    A = {tag, 1.5, <<"bin">>},
    B = [1, 2, 3],
    NZ = neg_zero(),
    Big = 1 bsl 200,
    Self = self(),
    Inner = fun(X) -> {A, X} end,
    [{"fun_export", fun lists:map/2}, {"fun_export_erlang", fun erlang:'+'/2},
     {"fun_export_self", fun ?MODULE:main/1},
     {"fun_export_255", erlang:make_fun(m, f, 255)},
     {"fun_export_unicode", erlang:make_fun(list_to_atom([$m, ?O_UML]),
                                            list_to_atom([?SNOWMAN]), 0)},
     {"fun_local_0", fun() -> ok end},
     {"fun_local_1", fun(X) -> X + 1 end},
     {"fun_local_free_1", fun() -> A end},
     {"fun_local_free_many", fun(X) -> {A, B, NZ, Big, Self, X} end},
     {"fun_local_free_fun", fun() -> Inner(B) end},
     {"funs_in_list", [fun lists:map/2, Inner, fun() -> B end]}].

nesting() ->
    [{"deep_tuple_500", deep(500, fun(X) -> {X} end, leaf)},
     {"deep_list_500", deep(500, fun(X) -> [X] end, [])},
     {"deep_map_100", deep(100, fun(X) -> #{k => X} end, #{})},
     {"deep_improper_200", deep(200, fun(X) -> [a | {X}] end, z)},
     {"deep_mixed_300", deep(300, fun(X) -> {[X], #{}} end, <<>>)},
     {"deep_binary_tree_10", deep(10, fun(X) -> {X, X} end, 1)}].

deep(0, _F, Acc) -> Acc;
deep(N, F, Acc) -> deep(N - 1, F, F(Acc)).

misc() ->
    [{"otp_release", {list_to_binary(erlang:system_info(otp_release)),
                      list_to_binary(erlang:system_info(version))}},
     {"compressible_list", lists:duplicate(1000, {ok, <<"same">>})},
     {"gen_call", {'$gen_call', {self(), [alias | make_ref()]}, {get, <<"key">>}}},
     {"rpc_like", {call, lists, seq, [1, 10], self()}},
     {"all_kinds", {1, 2.0, a, "s", <<"b">>, <<1:1>>, [x | y], #{k => v}, self(),
                    make_ref(), fun lists:map/2, 1 bsl 70, {}}}].

%% ---------------------------------------------------------------------------
%% Terms on a distributed node (node() is now a real name).

dist_terms() ->
    Dead = spawn(fun() -> ok end),
    Port = case erlang:ports() of
               [P | _] -> P;
               [] -> open_port({spawn, "true"}, [])
           end,
    Self = self(),
    [{"dist_node", node()}, {"dist_pid_self", Self}, {"dist_pid_dead", Dead},
     {"dist_pid_init", whereis(init)},
     {"dist_ref_make", make_ref()}, {"dist_ref_alias", erlang:alias()},
     {"dist_ref_monitor", erlang:monitor(process, Dead)},
     {"dist_port", Port},
     {"dist_fun_local", fun() -> Self end},
     {"dist_mixed", {node(), Self, make_ref(), Port, #{Self => [alias | make_ref()]}}}].

%% ---------------------------------------------------------------------------
%% Random terms (deterministic for a seed and an OTP release)

random_terms(Seed, Count, Depth) ->
    rand:seed(exsss, {Seed band 16#FFFFFFFF, (Seed bsr 32) bxor 16#5DEECE66D, 7}),
    [{"random:" ++ integer_to_list(Seed) ++ ":" ++ integer_to_list(I), rterm(Depth)}
     || I <- lists:seq(1, Count)].

pick(L) -> lists:nth(rand:uniform(length(L)), L).

rterm(0) -> rleaf();
rterm(D) ->
    case rand:uniform(12) of
        N when N =< 5 -> rleaf();
        6 -> list_to_tuple(rlist(D, 4));
        7 -> rlist(D, 4);
        8 -> [rand:uniform(256) - 1 || _ <- lists:seq(1, rand:uniform(20) - 1)];
        9 -> rlist(D, 3) ++ rleaf_not_list();
        10 -> rmap(D, 3);
        11 -> case rand:uniform(6) of
                  %% Wide containers, of leaves only.
                  1 -> maps:from_list([{rleaf(), rleaf()} || _ <- lists:seq(1, 30 + rand:uniform(20))]);
                  2 -> list_to_tuple([rleaf() || _ <- lists:seq(1, 250 + rand:uniform(20))]);
                  3 -> [rleaf() || _ <- lists:seq(1, 100)];
                  _ -> #{rterm(D - 1) => rterm(D - 1)}
              end;
        12 -> maps:from_list([{rleaf(), rterm(D - 1)} || _ <- lists:seq(1, rand:uniform(4))])
    end.

rlist(D, Max) -> [rterm(D - 1) || _ <- lists:seq(1, rand:uniform(Max + 1) - 1)].

rmap(D, Max) ->
    maps:from_list([{rterm(D - 1), rterm(D - 1)} || _ <- lists:seq(1, rand:uniform(Max + 1) - 1)]).

rleaf_not_list() ->
    case rleaf() of
        L when is_list(L) -> ratom();
        T -> T
    end.

rleaf() ->
    case rand:uniform(14) of
        1 -> rand:uniform(256) - 1;
        2 -> rand:uniform(1 bsl 32) - (1 bsl 31);
        3 -> rbig();
        4 -> rfloat();
        5 -> ratom();
        6 -> rbinary();
        7 -> rbits();
        8 -> pick([[], {}, #{}, <<>>, true, false, undefined]);
        9 -> pick([self(), list_to_pid("<0.0.0>"), make_ref(), erlang:alias(),
                   fun lists:map/2, mk_pid('r@h', rand:uniform(1000), 0, rand:uniform(1 bsl 32) - 1),
                   mk_ref('r@h', rand:uniform(1 bsl 32) - 1,
                          [rand:uniform(1 bsl 32) - 1 || _ <- lists:seq(1, rand:uniform(5))]),
                   mk_port('r@h', rand:uniform(1 bsl 40), rand:uniform(1 bsl 32) - 1)]);
        10 -> [rand:uniform(16#10FFFF div 4) || _ <- lists:seq(1, rand:uniform(5))];
        11 -> -rand:uniform(1 bsl 64);
        12 -> float(rand:uniform(1000000)) / 8;
        13 -> rand:uniform(65536) - 1;
        14 -> unicode:characters_to_binary(rstring())
    end.

rbig() ->
    Bits = pick([33, 63, 64, 65, 127, 128, 129, 1000, 2040, 2041, 2048]),
    V = rand:uniform(1 bsl Bits),
    case rand:uniform(2) of 1 -> V; 2 -> -V end.

rfloat() ->
    Bits = rand:uniform(1 bsl 64) - 1,
    case <<Bits:64>> of
        <<_:1, 16#7FF:11, _:52>> -> rfloat();   % NaN or infinity
        <<F/float>> -> F
    end.

ratom() ->
    case rand:uniform(6) of
        1 -> pick(['', a, ok, error, nil, 'EXIT', 'hello world', 'r@h']);
        2 -> list_to_atom(rstring());
        3 -> list_to_atom([rand:uniform(255) || _ <- lists:seq(1, rand:uniform(10))]);
        4 -> list_to_atom(lists:duplicate(255, pick([$z, ?E_ACUTE, ?SNOWMAN, ?GRIN])));
        _ -> list_to_atom([$a - 1 + rand:uniform(26) || _ <- lists:seq(1, rand:uniform(12))])
    end.

rstring() ->
    [pick([rand:uniform(127), rand:uniform(255), 16#100 + rand:uniform(16#D6FF),
           16#10000 + rand:uniform(16#FFFF)])
     || _ <- lists:seq(1, rand:uniform(8))].

rbinary() ->
    N = pick([0, 1, 2, 5, 10, 40]),
    << <<(rand:uniform(256) - 1)>> || _ <- lists:seq(1, N) >>.

rbits() ->
    B = rbinary(),
    Extra = rand:uniform(7),
    <<B/binary, (rand:uniform(1 bsl Extra) - 1):Extra>>.

%% ---------------------------------------------------------------------------
%% check: Python's bytes against the expected Erlang term

check(In, Out) ->
    {ok, Data} = file:read_file(In),
    <<"QDC1", Count:32, Rest/binary>> = Data,
    {Cases, <<>>} = read_n(Count, Rest, fun read_check_case/1),
    Results = [check_case(C) || C <- Cases],
    ok = file:write_file(Out, [<<"QDR1", (length(Results)):32>> | Results]).

read_check_case(<<NL:16, Name:NL/binary, EL:32, Expr:EL/binary, OL:32, Opts:OL/binary,
                  BL:32, Bin:BL/binary, Rest/binary>>) ->
    {{Name, Expr, Opts, Bin}, Rest}.

check_case({Name, Expr, OptsExpr, Bin}) ->
    {Status, Equal, Detail, OtpBytes} =
        case catch_eval(Expr) of
            {error, Why} ->
                {3, 0, Why, <<>>};
            {ok, Expected} ->
                Otp = case catch_eval(OptsExpr) of
                          {ok, Opts} -> term_to_binary(Expected, Opts);
                          {error, _} -> term_to_binary(Expected, [{minor_version, 2}])
                      end,
                Eq = bool(Otp =:= Bin),
                try binary_to_term(Bin) of
                    Got when Got =:= Expected -> {0, Eq, <<>>, Otp};
                    Got -> {1, Eq, <<"got ", (show(Got, 4000))/binary>>, Otp}
                catch
                    C:R -> {2, Eq, fmt("binary_to_term failed: ~tp:~ts", [C, show(R, 500)]), Otp}
                end
        end,
    [str16(Name), <<Status:8, Equal:8>>, str32(Detail), str32(OtpBytes)].

bool(true) -> 1;
bool(false) -> 0.

fmt(F, A) -> unicode:characters_to_binary(io_lib:format(F, A)).

catch_eval(Src) ->
    try
        Chars = unicode:characters_to_list(Src, utf8),
        {ok, Tokens, _} = erl_scan:string(Chars ++ "\n."),
        {ok, Exprs} = erl_parse:parse_exprs(Tokens),
        {value, V, _} = erl_eval:exprs(Exprs, erl_eval:new_bindings()),
        {ok, V}
    catch
        C:R -> {error, fmt("cannot evaluate ~ts: ~tp:~ts", [Src, C, show(R, 500)])}
    end.

%% ---------------------------------------------------------------------------
%% reencode: binary_to_term then term_to_binary(T, [{minor_version, 2}])

reencode(In, Out) ->
    {ok, Data} = file:read_file(In),
    <<"QDB1", Count:32, Rest/binary>> = Data,
    {Bins, <<>>} = read_n(Count, Rest, fun(<<L:32, B:L/binary, R/binary>>) -> {B, R} end),
    Results = [try term_to_binary(binary_to_term(B), [{minor_version, 2}]) of
                   Bytes -> [<<0:8>>, str32(Bytes)]
               catch
                   C:R -> [<<1:8>>, str32(fmt("~tp:~ts", [C, show(R, 500)]))]
               end || B <- Bins],
    ok = file:write_file(Out, [<<"QDR2", (length(Results)):32>> | Results]).

read_n(N, Bin, Read) -> read_n(N, Bin, Read, []).

read_n(0, Bin, _Read, Acc) -> {lists:reverse(Acc), Bin};
read_n(N, Bin, Read, Acc) ->
    {Item, Rest} = Read(Bin),
    read_n(N - 1, Rest, Read, [Item | Acc]).
