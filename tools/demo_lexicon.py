"""Word lists of the demo corpus's free-form sentence generators (`tools/demo_text.py`).

Hand-written for this repository: common Mandarin words by role (people, times, places, things by
kind, verbs with the kinds of object they take, adjectives, measure words) and the same for
English, with verb forms. Proper names are kept in separate lists so hotword tests can use them.
"""

# ----------------------------------------------------------------------------- Mandarin
ZH_SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤")
ZH_GIVEN = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰飞红鹏辉建志文波宁春雪梅琳晨欣怡浩宇子涵博远思雨佳琪凯悦晴昊然轩睿泽婷颖倩彤瑶萱诗雅新")
ZH_PRONOUNS = ["我", "你", "他", "她", "我们", "你们", "他们", "大家", "我妈妈", "我爸爸", "我哥哥", "我姐姐",
               "我弟弟", "我妹妹", "我朋友", "老师", "学生", "同学", "医生", "经理", "老板", "司机", "邻居",
               "孩子们", "工程师", "服务员", "记者", "警察", "护士", "校长", "厨师", "客人", "这位先生", "那位女士"]
ZH_CITIES = ["北京", "上海", "杭州", "深圳", "广州", "成都", "重庆", "南京", "武汉", "西安", "苏州", "天津",
             "长沙", "郑州", "青岛", "厦门", "大连", "沈阳", "昆明", "贵阳", "南宁", "合肥", "济南", "福州",
             "宁波", "无锡", "兰州", "拉萨", "香港", "澳门", "哈尔滨", "石家庄", "太原", "南昌", "海口", "三亚",
             "桂林", "洛阳", "扬州", "绍兴"]
ZH_PLACES = ["学校", "公司", "医院", "公园", "银行", "超市", "图书馆", "机场", "火车站", "饭店", "商店", "家里",
             "办公室", "会议室", "教室", "食堂", "咖啡馆", "电影院", "博物馆", "体育馆", "宾馆", "邮局", "菜市场",
             "地铁站", "停车场", "厨房", "花园", "海边", "山上", "村子里", "实验室", "工厂", "书店", "广场"]
ZH_TIMES = ["今天", "明天", "昨天", "后天", "前天", "上午", "下午", "晚上", "早上", "中午", "周末", "去年",
            "明年", "今年", "现在", "刚才", "每天", "下周", "上周", "下个月", "上个月", "春天", "夏天", "秋天",
            "冬天", "星期一", "星期三", "星期五", "星期天", "今天晚上", "明天早上", "昨天下午", "半夜", "平时"]
ZH_ADVERBS = ["已经", "马上", "经常", "一起", "常常", "突然", "慢慢", "终于", "还", "也", "都", "一直",
              "刚刚", "偶尔", "总是", "又", "再", "就", "差点", "只", "先", "正在", "悄悄", "认真"]
ZH_DEGREE = ["很", "非常", "特别", "有点", "比较", "太", "真", "挺", "更"]
ZH_ADJ = ["好", "大", "小", "新", "旧", "贵", "便宜", "漂亮", "干净", "安静", "热闹", "重要", "简单", "复杂",
          "有意思", "好吃", "好看", "方便", "舒服", "忙", "累", "高兴", "快", "慢", "远", "近", "冷", "热",
          "难", "容易", "奇怪", "可爱", "聪明", "辛苦", "厉害", "危险", "健康", "年轻", "老", "短", "长"]
ZH_WEATHER = ["晴天", "下雨", "下雪", "刮风", "阴天", "多云", "很热", "很冷", "暖和", "凉快"]
ZH_DIGITS = list("一二三四五六七八九")
# (noun, measure word) by kind; a verb names the kinds it takes.
ZH_NOUNS = {
    "food": [("苹果", "个"), ("面条", "碗"), ("米饭", "碗"), ("饺子", "盘"), ("鸡蛋", "个"), ("蛋糕", "块"),
             ("西瓜", "个"), ("香蕉", "根"), ("包子", "个"), ("水果", "些"), ("蔬菜", "些"), ("鱼", "条"),
             ("面包", "个"), ("葡萄", "串"), ("橘子", "个"), ("饼干", "包")],
    "drink": [("咖啡", "杯"), ("茶", "杯"), ("牛奶", "瓶"), ("果汁", "杯"), ("啤酒", "瓶"), ("热水", "杯"),
              ("可乐", "瓶"), ("豆浆", "碗")],
    "thing": [("手机", "部"), ("电脑", "台"), ("衣服", "件"), ("鞋", "双"), ("帽子", "顶"), ("雨伞", "把"),
              ("椅子", "把"), ("桌子", "张"), ("自行车", "辆"), ("汽车", "辆"), ("钥匙", "把"), ("包", "个"),
              ("礼物", "份"), ("花", "束"), ("杯子", "个"), ("相机", "台"), ("手表", "块"), ("眼镜", "副"),
              ("灯", "盏"), ("冰箱", "台"), ("电视", "台"), ("沙发", "张"), ("门票", "张"), ("车票", "张")],
    "text": [("书", "本"), ("报告", "份"), ("信", "封"), ("文章", "篇"), ("小说", "本"), ("作业", "份"),
             ("合同", "份"), ("日记", "篇"), ("邮件", "封"), ("报纸", "份"), ("杂志", "本"), ("论文", "篇"),
             ("通知", "份"), ("计划", "份"), ("菜单", "份"), ("地图", "张")],
    "media": [("电影", "部"), ("新闻", "条"), ("比赛", "场"), ("节目", "个"), ("演出", "场"), ("照片", "张"),
              ("视频", "个"), ("电视剧", "部")],
    "subject": [("数学", ""), ("历史", ""), ("英语", ""), ("中文", ""), ("音乐", ""), ("物理", ""), ("化学", ""),
                ("画画", ""), ("游泳", ""), ("做饭", ""), ("开车", ""), ("编程", ""), ("经济学", ""), ("法律", "")],
    "animal": [("猫", "只"), ("狗", "条"), ("鸟", "只"), ("马", "匹"), ("熊猫", "只"), ("兔子", "只"),
               ("老虎", "只"), ("小鸡", "只")],
    "task": [("问题", "个"), ("工作", "份"), ("任务", "个"), ("项目", "个"), ("会议", "个"), ("考试", "场"),
             ("活动", "个"), ("实验", "个"), ("办法", "个"), ("决定", "个")],
}
# (verb, object kinds, can take 了)
ZH_VERBS = [
    ("吃", ("food",), True), ("买", ("food", "thing", "text", "drink"), True), ("喝", ("drink",), True),
    ("做", ("food", "task"), True), ("看", ("text", "media", "animal"), True), ("读", ("text",), True),
    ("写", ("text",), True), ("学习", ("subject",), True), ("带", ("thing", "food", "drink", "text"), True),
    ("找", ("thing", "text", "animal"), True), ("卖", ("food", "thing", "drink"), True),
    ("修", ("thing",), True), ("准备", ("food", "thing", "text", "task"), True),
    ("讨论", ("task", "text", "media"), True), ("完成", ("task", "text"), True),
    ("送", ("thing", "food", "text"), True), ("借", ("thing", "text"), True),
    ("喜欢", ("food", "drink", "thing", "media", "subject", "animal"), False),
    ("需要", ("thing", "text", "food", "drink"), False), ("拿", ("thing", "text", "food", "drink"), True),
    ("收到", ("text", "thing"), True), ("丢", ("thing",), True), ("洗", ("thing", "food"), True),
    ("打印", ("text",), True), ("翻译", ("text",), True), ("检查", ("text", "task", "thing"), True),
    ("拍", ("media",), True), ("养", ("animal",), True), ("画", ("animal", "thing"), True),
    ("解决", ("task",), True), ("安排", ("task",), True), ("参加", ("task",), True),
]
ZH_INTRANSITIVE = ["休息", "睡觉", "跑步", "散步", "唱歌", "跳舞", "上班", "下班", "开会", "加班", "旅游",
                   "回家", "出门", "锻炼", "上课", "聊天", "笑了", "哭了", "迟到了", "生病了", "搬家", "等车"]
ZH_MOTION = ["去", "来", "回", "到"]
ZH_MODALS = ["想", "要", "打算", "准备", "希望", "应该", "可以", "必须", "喜欢"]
ZH_THINK = ["觉得", "知道", "听说", "发现", "相信", "记得", "以为"]
ZH_CS_NOUNS = ["meeting", "email", "project", "deadline", "offer", "app", "bug", "demo", "report", "case",
               "idea", "team", "plan", "feedback", "update", "design", "review", "party", "video", "menu"]

# ----------------------------------------------------------------------------- English
EN_NAMES = ["Alice", "Bob", "Charlie", "David", "Emma", "Frank", "Grace", "Henry", "Jack", "Kevin", "Laura",
            "Michael", "Nancy", "Oliver", "Rachel", "Samuel", "Thomas", "Sophia", "Daniel", "Olivia", "James",
            "Emily", "Lucas", "Hannah", "Ethan", "Ryan", "Julia", "Andrew", "Megan", "Brian", "Sarah", "Peter",
            "Anna", "Mark", "Lisa", "Paul", "Kate", "Tom", "Linda", "Chris"]
EN_SUBJECTS = ["I", "you", "we", "they", "he", "she", "my brother", "my sister", "my mother", "my father",
               "our teacher", "the doctor", "the manager", "my friend", "the children", "our neighbor",
               "the driver", "the students", "my boss", "the old man", "the young woman", "the engineer",
               "the waiter", "everyone", "nobody", "the police", "the nurse", "my uncle", "my aunt", "the team"]
EN_CITIES = ["London", "Paris", "Berlin", "Tokyo", "Seattle", "Boston", "Chicago", "Toronto", "Sydney",
             "Dublin", "Madrid", "Rome", "Vienna", "Denver", "Austin", "Oslo", "Prague", "Lisbon", "Miami",
             "Dallas", "Phoenix", "Atlanta", "Houston", "Montreal"]
EN_PLACES = ["school", "office", "hospital", "park", "bank", "market", "library", "airport", "station",
             "restaurant", "shop", "kitchen", "garden", "beach", "museum", "hotel", "church", "farm", "river",
             "village", "city center", "corner store", "train station", "bus stop", "classroom", "factory",
             "bakery", "stadium", "theater", "post office", "coffee shop", "parking lot"]
EN_TIMES = ["today", "tomorrow", "yesterday", "tonight", "this morning", "this afternoon", "this evening",
            "last night", "last week", "next week", "next month", "last year", "on Monday", "on Friday",
            "on Sunday", "every day", "in the morning", "at noon", "after lunch", "before dinner",
            "this weekend", "right now", "later", "soon", "in the summer", "in the winter", "at midnight"]
EN_ADVERBS = ["often", "never", "always", "usually", "sometimes", "finally", "quickly", "slowly", "quietly",
              "already", "really", "almost", "suddenly", "carefully", "still", "just", "rarely", "happily"]
EN_ADJ = ["big", "small", "new", "old", "red", "blue", "green", "white", "black", "cheap", "expensive",
          "heavy", "light", "clean", "dirty", "quiet", "loud", "hot", "cold", "warm", "fresh", "strange",
          "beautiful", "simple", "difficult", "important", "interesting", "funny", "friendly", "empty",
          "broken", "famous", "tiny", "huge", "soft", "sweet", "bright", "dark", "busy", "happy", "tired",
          "lucky", "careful", "strong", "gentle", "wooden", "modern", "favorite", "perfect", "terrible"]
EN_WEATHER = ["sunny", "rainy", "windy", "cloudy", "foggy", "cold", "hot", "warm", "snowy", "cool"]
EN_NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
              "fifteen", "twenty", "thirty", "forty", "fifty", "a hundred", "a few", "many", "several"]
# (singular, plural) by kind
EN_NOUNS = {
    "food": [("apple", "apples"), ("sandwich", "sandwiches"), ("cake", "cakes"), ("egg", "eggs"),
             ("banana", "bananas"), ("cookie", "cookies"), ("pizza", "pizzas"), ("orange", "oranges"),
             ("potato", "potatoes"), ("tomato", "tomatoes"), ("carrot", "carrots"), ("pie", "pies"),
             ("fish", "fish"), ("burger", "burgers"), ("lemon", "lemons"), ("onion", "onions")],
    "drink": [("coffee", "coffees"), ("tea", "teas"), ("juice", "juices"), ("glass of milk", "glasses of milk"),
              ("bottle of water", "bottles of water"), ("soda", "sodas"), ("cup of soup", "cups of soup")],
    "thing": [("phone", "phones"), ("computer", "computers"), ("shirt", "shirts"), ("shoe", "shoes"),
              ("hat", "hats"), ("umbrella", "umbrellas"), ("chair", "chairs"), ("table", "tables"),
              ("bicycle", "bicycles"), ("car", "cars"), ("key", "keys"), ("bag", "bags"), ("gift", "gifts"),
              ("flower", "flowers"), ("cup", "cups"), ("camera", "cameras"), ("watch", "watches"),
              ("lamp", "lamps"), ("window", "windows"), ("door", "doors"), ("box", "boxes"), ("ticket", "tickets"),
              ("jacket", "jackets"), ("bottle", "bottles"), ("pen", "pens"), ("clock", "clocks")],
    "text": [("book", "books"), ("report", "reports"), ("letter", "letters"), ("story", "stories"),
             ("novel", "novels"), ("email", "emails"), ("note", "notes"), ("contract", "contracts"),
             ("newspaper", "newspapers"), ("magazine", "magazines"), ("map", "maps"), ("poem", "poems"),
             ("menu", "menus"), ("list", "lists"), ("message", "messages"), ("paper", "papers")],
    "media": [("movie", "movies"), ("game", "games"), ("show", "shows"), ("photo", "photos"),
              ("video", "videos"), ("song", "songs"), ("concert", "concerts"), ("play", "plays")],
    "animal": [("cat", "cats"), ("dog", "dogs"), ("bird", "birds"), ("horse", "horses"), ("rabbit", "rabbits"),
               ("duck", "ducks"), ("cow", "cows"), ("mouse", "mice"), ("sheep", "sheep"), ("tiger", "tigers")],
    "task": [("problem", "problems"), ("job", "jobs"), ("project", "projects"), ("meeting", "meetings"),
             ("test", "tests"), ("plan", "plans"), ("question", "questions"), ("lesson", "lessons"),
             ("party", "parties"), ("trip", "trips"), ("decision", "decisions"), ("mistake", "mistakes")],
}
# (base, past, third person, object kinds)
EN_VERBS = [
    ("eat", "ate", "eats", ("food",)), ("buy", "bought", "buys", ("food", "thing", "text", "drink")),
    ("drink", "drank", "drinks", ("drink",)), ("make", "made", "makes", ("food", "thing", "task")),
    ("watch", "watched", "watches", ("media", "animal")), ("read", "read", "reads", ("text",)),
    ("write", "wrote", "writes", ("text",)), ("bring", "brought", "brings", ("thing", "food", "drink", "text")),
    ("find", "found", "finds", ("thing", "text", "animal")), ("sell", "sold", "sells", ("food", "thing")),
    ("fix", "fixed", "fixes", ("thing", "task")), ("prepare", "prepared", "prepares", ("food", "task", "text")),
    ("discuss", "discussed", "discusses", ("task", "text", "media")), ("finish", "finished", "finishes", ("task", "text", "food")),
    ("send", "sent", "sends", ("text", "thing")), ("borrow", "borrowed", "borrows", ("thing", "text")),
    ("like", "liked", "likes", ("food", "drink", "thing", "media", "animal")), ("need", "needed", "needs", ("thing", "text")),
    ("carry", "carried", "carries", ("thing", "food", "drink")), ("lose", "lost", "loses", ("thing",)),
    ("wash", "washed", "washes", ("thing", "food")), ("print", "printed", "prints", ("text",)),
    ("check", "checked", "checks", ("text", "task", "thing")), ("paint", "painted", "paints", ("thing", "animal")),
    ("feed", "fed", "feeds", ("animal",)), ("cook", "cooked", "cooks", ("food",)), ("open", "opened", "opens", ("thing", "text")),
    ("clean", "cleaned", "cleans", ("thing",)), ("plan", "planned", "plans", ("task",)), ("solve", "solved", "solves", ("task",)),
    ("forget", "forgot", "forgets", ("thing", "text", "task")), ("order", "ordered", "orders", ("food", "drink", "thing")),
    ("share", "shared", "shares", ("food", "text", "media")), ("hide", "hid", "hides", ("thing", "food")),
]
EN_INTRANSITIVE = [("sleep", "slept", "sleeps"), ("run", "ran", "runs"), ("walk", "walked", "walks"),
                   ("sing", "sang", "sings"), ("dance", "danced", "dances"), ("swim", "swam", "swims"),
                   ("work", "worked", "works"), ("travel", "traveled", "travels"), ("laugh", "laughed", "laughs"),
                   ("rest", "rested", "rests"), ("study", "studied", "studies"), ("wait", "waited", "waits"),
                   ("cry", "cried", "cries"), ("smile", "smiled", "smiles"), ("arrive", "arrived", "arrives")]
EN_PREPS = ["at the", "near the", "behind the", "in the", "outside the", "next to the"]
