%% quicdist_interop: the Erlang side of quicdist's real-OTP interop tests
%% (tests/test_interop_otp.py) and of `python -m bench interop`.
%%
%% Written for quicdist's own test suite. Compile with
%% `erlc -o DIR quicdist_interop.erl` and start a node with it:
%%
%%   erl -name NAME@127.0.0.1 -setcookie COOKIE -noinput -pa DIR \
%%       -eval 'quicdist_interop:start()'            % or start('py@127.0.0.1')
%%
%% start/0,1 registers the processes below, starts the gen_server
%% `qd_server` and prints "READY <node> <ping result>" (start/1 first does
%% net_adm:ping(PyNode), so that the connection to the Python node is dialed
%% by Erlang). Nothing here reads stdin; the node runs until it is killed.
%%
%% Registered processes
%%   qd_ctl     commands: {From, Ref, Command} from any node is answered with
%%              {Ref, Result} sent to From. Each command runs in a fresh
%%              process, so a long one (sending 100k messages, waiting for a
%%              monitor) never blocks the next. An exception in a command is
%%              the result {crashed, Class, Reason, Stack}. See command/2.
%%   qd_echo    {From, Msg} -> From ! {echoed, node(), Msg};
%%              {From, I, Payload} -> From ! {echo, I, Payload} (ping-pong).
%%   qd_sink    {start, RunId, N, Size, ReportTo}, then N x {msg, I, Payload}:
%%              counts, checks that I goes 0, 1, 2... and that the payload is
%%              Size bytes of "x", then ReportTo ! {sink_result, RunId, Count,
%%              BadOrder, BadPayload, Microseconds} (from the start marker to
%%              the last message, measured here).
%%   qd_server  a gen_server (this module's callbacks): {echo, X} -> X,
%%              incr -> the counter after adding one, casts -> the casts it
%%              got (newest first), {sleep, Ms} -> ok after Ms (the server
%%              stays responsive; {sleep, Ms, Notify} first sends Notify
%%              {sleeping, Ms}), whoami -> node(), and any cast is recorded.
%%              A server started with the start_server command also takes
%%              crash: it stops with reason boom without answering.
%%
%% Functions called through rpc by the Python side: odd_terms/5,
%% big_binary/1, deep/1, echo/1, fail/2.

-module(quicdist_interop).
-behaviour(gen_server).

-export([start/0, start/1]).
-export([odd_terms/5, big_binary/1, deep/1, echo/1, fail/2, info/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(IDLE, 120000).

%% ---------------------------------------------------------------------------
%% Start

start() ->
    start(none).

start(PyNode) ->
    register(qd_ctl, spawn(fun ctl_loop/0)),
    register(qd_echo, spawn(fun echo_loop/0)),
    register(qd_sink, spawn(fun sink_loop/0)),
    persistent_term:put({?MODULE, ref}, make_ref()),
    {ok, _} = gen_server:start({local, qd_server}, ?MODULE, [main], []),
    Ping = case PyNode of
               none -> none;
               _ -> net_adm:ping(PyNode)
           end,
    io:format("READY ~s ~s~n", [node(), Ping]),
    ok.

%% Facts the Python side needs: this node, a pid, a ref and a port of it,
%% the OTP release.
info() ->
    {node(), whereis(qd_ctl), persistent_term:get({?MODULE, ref}), a_port(),
     list_to_binary(erlang:system_info(otp_release)),
     list_to_binary(erlang:system_info(version))}.

a_port() ->
    case erlang:ports() of
        [Port | _] -> Port;
        [] -> undefined
    end.

%% ---------------------------------------------------------------------------
%% Commands

ctl_loop() ->
    receive
        {From, Ref, Command} when is_pid(From) ->
            spawn(fun() -> From ! {Ref, run(Command, From)} end);
        _ ->
            ok
    end,
    ctl_loop().

run(Command, From) ->
    try
        command(Command, From)
    catch
        Class:Reason:Stack -> {crashed, Class, Reason, Stack}
    end.

%% Connectivity.
command({ping, Node}, _) ->
    net_adm:ping(Node);
command(nodes, _) ->
    nodes();
command(info, _) ->
    info();
%% Messages: {seq, I} for I in 0..N-1, message I to element I rem length
%% of Dests (pids, {Name, Node}, aliases), then {seq_done, N} to the first.
command({send_seq, Dests, N}, _) ->
    Ds = list_to_tuple(Dests),
    send_seq(Ds, tuple_size(Ds), 0, N),
    element(1, Ds) ! {seq_done, N},
    sent;
%% A collector registered as Name: takes N x {seq, I}, checks the order,
%% then From ! {collected, Name, Count, BadOrder, FirstProblem}.
command({collector, Name, N}, From) ->
    Parent = self(),
    Pid = spawn(fun() ->
                        register(Name, self()),
                        Parent ! {self(), registered},
                        collect(From, Name, N, 0, 0, none)
                end),
    receive {Pid, registered} -> {collector, Pid} after 5000 -> no_collector end;
%% A process with an alias (answered): {From, Msg} sent to the alias is
%% answered with From ! {via_alias, Msg}.
command(alias_echo, _) ->
    Parent = self(),
    Pid = spawn(fun() ->
                        Alias = alias(),
                        Parent ! {self(), Alias},
                        alias_echo()
                end),
    receive {Pid, Alias} -> Alias after 5000 -> no_alias end;
%% Processes to link to and monitor.
command({victim, Name}, _) ->
    Parent = self(),
    Pid = spawn(fun() ->
                        case Name of
                            none -> ok;
                            _ -> register(Name, self())
                        end,
                        Parent ! {self(), ready},
                        victim()
                end),
    receive {Pid, ready} -> Pid after 5000 -> no_victim end;
command({kill, Pid}, _) ->
    exit(Pid, kill),
    ok;
command({exit, Pid, Reason}, _) ->
    exit(Pid, Reason),
    ok;
command({stop, Pid, Reason}, _) ->
    Pid ! {stop, Reason},
    ok;
command({is_alive, Pid}, _) ->
    rpc:call(node(Pid), erlang, is_process_alive, [Pid]);
%% A watcher (traps exits): links to Target if it is a pid, monitors it (a
%% pid or {Name, Node}) and its node, and reports each event to From:
%% {watched, Watcher, exit, Pid, Reason}, {watched, Watcher, down, Object,
%% Reason}, {watched, Watcher, nodedown, Node}. Link and monitors are set
%% before this command answers.
command({watch, Target}, From) ->
    Parent = self(),
    Pid = spawn(fun() -> watcher(Target, From, Parent) end),
    receive {Pid, watching} -> {watching, Pid} after 5000 -> no_watcher end;
%% gen_server calls into any gen_server (a Python one included).
command({gen_call, Dest, Request, Timeout}, _) ->
    catch gen_server:call(Dest, Request, Timeout);
command({gen_cast, Dest, Request}, _) ->
    gen_server:cast(Dest, Request);
%% What gen_server:call sends, by hand: the [alias | Mref] tag must come
%% back exactly ({reply, Tag, Reply, Reply =:= Tag} when the server answers
%% with the tag it saw).
command({raw_call, Dest, Request, Timeout}, _) ->
    Mref = erlang:monitor(process, Dest, [{alias, demonitor}]),
    Tag = [alias | Mref],
    Dest ! {'$gen_call', {self(), Tag}, Request},
    receive
        {Tag, Reply} ->
            erlang:demonitor(Mref, [flush]),
            {reply, Tag, Reply, Reply =:= Tag};
        {'DOWN', Mref, _, _, Reason} ->
            {down, Reason}
    after Timeout ->
            erlang:demonitor(Mref, [flush]),
            timeout
    end;
command(start_server, _) ->
    {ok, Pid} = gen_server:start(?MODULE, [temporary], []),
    Pid;
%% Calls into the Python node.
command({rpc, Node, M, F, A}, _) ->
    rpc:call(Node, M, F, A, 10000);
command({rpc, Node, M, F, A, Timeout}, _) ->
    rpc:call(Node, M, F, A, Timeout);
command({erpc, Node, M, F, A}, _) ->
    try
        {return, erpc:call(Node, M, F, A, 10000)}
    catch
        Class:Reason -> {Class, Reason}
    end;
command({block_call, Node, M, F, A}, _) ->
    rpc:block_call(Node, M, F, A, 10000);
%% A plain remote spawn (not erpc): {ok, Pid} or {error, Reason}.
command({spawn_request, Node, M, F, A}, _) ->
    ReqId = spawn_request(Node, M, F, A, [monitor]),
    receive
        {spawn_reply, ReqId, Status, Result} -> {Status, Result}
    after 10000 ->
            timeout
    end;
command({rpc_cast, Node, M, F, A}, _) ->
    rpc:cast(Node, M, F, A);
command({erpc_cast, Node, M, F, A}, _) ->
    erpc:cast(Node, M, F, A);
%% Terms. {terms, PyPid, PyRef}: info() and odd_terms/5 (Erlang -> Python).
command({terms, PyPid, PyRef}, _) ->
    {_, EPid, ERef, EPort, _, _} = info(),
    {EPid, ERef, EPort, odd_terms(PyPid, PyRef, EPid, ERef, EPort)};
%% {check_terms, Terms, PyPid, PyRef}: Terms as the Python side built them,
%% compared with =:= to odd_terms/5 here; answers the names that differ and
%% Terms itself (the echo goes back to Python).
command({check_terms, Terms, PyPid, PyRef}, _) ->
    {_, EPid, ERef, EPort, _, _} = info(),
    Expected = odd_terms(PyPid, PyRef, EPid, ERef, EPort),
    {mismatches(Expected, Terms), Terms};
%% odd_terms/5 through rpc:call to Module:Function/1 on the Python node
%% (an echo): the names whose result is not =:= what was sent.
command({rpc_terms, Node, M, F, PyPid, PyRef}, _) ->
    {_, EPid, ERef, EPort, _, _} = info(),
    Terms = odd_terms(PyPid, PyRef, EPid, ERef, EPort),
    case rpc:call(Node, M, F, [Terms], 20000) of
        Back when is_list(Back) -> {mismatches(Terms, Back), length(Back)};
        Other -> {failed, Other}
    end;
%% Benchmarks. Dest ! {start, RunId, N, Size, ReportTo}, then N x
%% {msg, I, <<Size x "x">>}; answers the microseconds the sends took here.
command({blast, Dest, RunId, N, Size, ReportTo}, _) ->
    Payload = binary:copy(<<"x">>, Size),
    T0 = erlang:monotonic_time(),
    Dest ! {start, RunId, N, Size, ReportTo},
    blast(Dest, Payload, 0, N),
    {blasted, micros(erlang:monotonic_time() - T0)};
%% Ping-pong: N + Warmup round trips of {self(), I, Payload} to an echo
%% answering {echo, I, Payload}; the N measured ones in microseconds.
command({pingpong, Dest, N, Warmup, Size}, _) ->
    Payload = binary:copy(<<"x">>, Size),
    pingpong(Dest, Payload, 0, N + Warmup, Warmup, []);
%% K copies of Command at once, each in its own process; their results in
%% order.
command({parallel, K, Command}, From) ->
    Self = self(),
    Pids = [spawn(fun() -> Self ! {self(), run(Command, From)} end)
            || _ <- lists:seq(1, K)],
    [receive {Pid, Result} -> Result after 30000 -> timeout end || Pid <- Pids];
%% Command, but for at most Ms milliseconds: {done, Result}, or timeout
%% (the process running it is killed).
command({within, Ms, Command}, From) ->
    Self = self(),
    Pid = spawn(fun() -> Self ! {self(), run(Command, From)} end),
    receive
        {Pid, Result} -> {done, Result}
    after Ms ->
            exit(Pid, kill),
            timeout
    end;
command({apply, M, F, A}, _) ->
    apply(M, F, A);
command({multi_call, Nodes, Name, Request, Timeout}, _) ->
    gen_server:multi_call(Nodes, Name, Request, Timeout);
command({global_trans, Id, Nodes}, _) ->
    global:trans(Id, fun() -> in_trans end, Nodes, 0);
command({disconnect, Node}, _) ->
    erlang:disconnect_node(Node);
command(Other, _) ->
    {unknown_command, Other}.

send_seq(_, _, N, N) ->
    ok;
send_seq(Ds, Len, I, N) ->
    element(I rem Len + 1, Ds) ! {seq, I},
    send_seq(Ds, Len, I + 1, N).

collect(From, Name, N, N, Bad, First) ->
    From ! {collected, Name, N, Bad, First};
collect(From, Name, N, I, Bad, First) ->
    receive
        {seq, I} ->
            collect(From, Name, N, I + 1, Bad, First);
        {seq, J} ->
            collect(From, Name, N, I + 1, Bad + 1,
                    case First of none -> {expected, I, got, J}; _ -> First end)
    after 60000 ->
            From ! {collected, Name, I, Bad, {timeout, First}}
    end.

alias_echo() ->
    receive
        {From, Msg} when is_pid(From) -> From ! {via_alias, Msg}
    after ?IDLE ->
            exit(normal)
    end,
    alias_echo().

victim() ->
    receive
        {stop, Reason} -> exit(Reason);
        _ -> victim()
    end.

watcher(Target, From, Parent) ->
    process_flag(trap_exit, true),
    case Target of
        Pid when is_pid(Pid) -> link(Pid);
        _ -> ok
    end,
    erlang:monitor(process, Target),
    Node = case Target of
               {_, N} -> N;
               P -> node(P)
           end,
    monitor_node(Node, true),
    Parent ! {self(), watching},
    watch_loop(From).

watch_loop(From) ->
    receive
        {'EXIT', Pid, Reason} -> From ! {watched, self(), exit, Pid, Reason};
        {'DOWN', _, process, Object, Reason} -> From ! {watched, self(), down, Object, Reason};
        {nodedown, Node} -> From ! {watched, self(), nodedown, Node}
    after ?IDLE ->
            exit(normal)
    end,
    watch_loop(From).

blast(_, _, N, N) ->
    ok;
blast(Dest, Payload, I, N) ->
    Dest ! {msg, I, Payload},
    blast(Dest, Payload, I + 1, N).

pingpong(_, _, N, N, _, Acc) ->
    {samples, lists:reverse(Acc)};
pingpong(Dest, Payload, I, N, Warmup, Acc) ->
    T0 = erlang:monotonic_time(),
    Dest ! {self(), I, Payload},
    receive
        {echo, I, Payload} ->
            T1 = erlang:monotonic_time(),
            Acc1 = case I >= Warmup of
                       true -> [micros(T1 - T0) | Acc];
                       false -> Acc
                   end,
            pingpong(Dest, Payload, I + 1, N, Warmup, Acc1);
        {echo, J, _} ->
            {bad_echo, I, J}
    after 10000 ->
            {timeout, I}
    end.

micros(Native) ->
    erlang:convert_time_unit(Native, native, nanosecond) / 1000.

mismatches(Expected, Got) when length(Expected) =:= length(Got) ->
    [Name || {{Name, E}, {Name2, G}} <- lists:zip(Expected, Got),
             not (Name =:= Name2 andalso E =:= G)];
mismatches(Expected, Got) ->
    {length_differs, length(Expected), Got}.

%% ---------------------------------------------------------------------------
%% Echo and sink

echo_loop() ->
    receive
        {From, I, Payload} when is_pid(From) -> From ! {echo, I, Payload};
        {From, Msg} when is_pid(From) -> From ! {echoed, node(), Msg};
        _ -> ok
    end,
    echo_loop().

sink_loop() ->
    receive
        {start, RunId, N, Size, ReportTo} ->
            Want = binary:copy(<<"x">>, Size),
            T0 = erlang:monotonic_time(),
            {Count, BadOrder, BadPayload} = sink_count(Want, 0, N, 0, 0),
            T1 = erlang:monotonic_time(),
            ReportTo ! {sink_result, RunId, Count, BadOrder, BadPayload, micros(T1 - T0)};
        _ ->
            ok
    end,
    sink_loop().

sink_count(_, N, N, BadOrder, BadPayload) ->
    {N, BadOrder, BadPayload};
sink_count(Want, I, N, BadOrder, BadPayload) ->
    receive
        {msg, J, Payload} ->
            sink_count(Want, I + 1, N,
                       case J =:= I of true -> BadOrder; false -> BadOrder + 1 end,
                       case Payload =:= Want of true -> BadPayload; false -> BadPayload + 1 end)
    after 60000 ->
            {I, BadOrder, BadPayload}
    end.

%% ---------------------------------------------------------------------------
%% Terms (tests/test_interop_otp.py builds the same list in Python)

big_binary(Size) ->
    binary:part(binary:copy(list_to_binary(lists:seq(0, 255)), Size div 256 + 1), 0, Size).

deep(0) -> leaf;
deep(N) -> {N, [deep(N - 1)]}.

echo(X) -> X.

fail(throw, X) -> throw(X);
fail(exit, X) -> exit(X);
fail(error, X) -> error(X).

odd_terms(PyPid, PyRef, EPid, ERef, EPort) ->
    [{big_binary, big_binary(1 bsl 20)},
     {bignum_pos, (1 bsl 200) + 12345},
     {bignum_neg, -(1 bsl 300) - 7},
     {bignum_huge, 1 bsl 5000},
     {integers, [0, 255, 256, -1, 134217727, -134217728, 2147483647, -2147483648,
                 2147483648, 9223372036854775807, -9223372036854775808,
                 18446744073709551616]},
     {floats, [0.0, 1.5, -2.25e-300, 1.7976931348623157e308, 5.0e-324,
               3.141592653589793, -1.0e10]},
     {atoms, ['', 'héllo_wörld', '日本語', 'λ', 'with space', 'UPPER', 'nil',
              list_to_atom(lists:duplicate(255, 955))]},
     {booleans, [true, false, undefined]},
     {empty, {[], {}, <<>>, #{}}},
     {improper, [[1 | 2], [a, b | <<"tail">>], [[] | x]]},
     {string, "hello"},
     {byte_list, lists:seq(0, 255)},
     {int_list, lists:seq(0, 70000, 7)},
     {unicode_binary, <<"héllo wörld ☃"/utf8>>},
     {map, #{a => 1, <<"b">> => [1, 2], {t, 1} => #{nested => true}, 3.5 => "x"}},
     {big_map, maps:from_list([{I, integer_to_binary(I)} || I <- lists:seq(1, 100)])},
     {odd_map, #{[1, 2] => list_key, 1 => int, 1.0 => float}},
     {bits, [<<1:3>>, <<255, 7:5>>, <<0:1>>]},
     {tuples, [{}, {a}, list_to_tuple(lists:seq(1, 300))]},
     {deep, deep(200)},
     {pids_refs, [PyPid, PyRef, EPid, ERef, EPort]},
     {export_fun, fun lists:reverse/1},
     {mixed, [{ok, <<>>, [], #{}}, [{}], #{[] => {}}, <<"a">>, [<<>>]]}].

%% ---------------------------------------------------------------------------
%% gen_server callbacks (qd_server, and the start_server command's servers)

init([Kind]) ->
    {ok, #{kind => Kind, count => 0, casts => []}}.

handle_call({echo, X}, _From, State) ->
    {reply, X, State};
handle_call(incr, _From, State = #{count := Count}) ->
    {reply, Count + 1, State#{count := Count + 1}};
handle_call(casts, _From, State = #{casts := Casts}) ->
    {reply, Casts, State};
handle_call({sleep, Ms}, From, State) ->
    spawn(fun() -> timer:sleep(Ms), gen_server:reply(From, ok) end),
    {noreply, State};
handle_call({sleep, Ms, Notify}, From, State) ->
    Notify ! {sleeping, Ms},
    spawn(fun() -> timer:sleep(Ms), gen_server:reply(From, ok) end),
    {noreply, State};
handle_call(whoami, _From, State) ->
    {reply, node(), State};
handle_call(crash, _From, State = #{kind := temporary}) ->
    {stop, boom, State};
handle_call(Other, _From, State) ->
    {reply, {unknown_call, Other}, State}.

handle_cast(Request, State = #{casts := Casts}) ->
    {noreply, State#{casts := [Request | Casts]}}.

handle_info(_Info, State) ->
    {noreply, State}.
